//! Bad input gets one line naming the cause and the fix, and harms nothing.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common;
use crate::common::{Ctxleak, Phases, ctxleak, fixture, newest_go, wait_timeout};

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
    counts_its_one_goroutine(&ctxleak, target.pid());
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
/// The attached `phases` fixture, at its first checkpoint, is counted with its one goroutine.
fn counts_its_one_goroutine(ctxleak: &Ctxleak, pid: u32) {
    let series = format!(r#"ctxleak_goroutines{{pid="{pid}",kind="user"}}"#);
    let settled = common::wait_for_sample(ctxleak, &series, 1.0, Duration::from_secs(15));
    assert!(
        settled.is_ok(),
        "the fixture has one goroutine at its first checkpoint: {settled:?}"
    );
}

#[test]
fn a_binary_without_dwarf_attaches() {
    let target = Running::start(&fixture(&newest_go(), "phases-nodwarf"), &[]);
    let ctxleak = Ctxleak::attach(target.pid());
    counts_its_one_goroutine(&ctxleak, target.pid());
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

/// How long a refusal may take, and how much memory: far above what a refusal costs (a few
/// ms, 15 MB here), far below what reading `/dev/zero` costs (it never ends and grows by
/// hundreds of MB a second).
const REFUSAL_TIME: Duration = Duration::from_secs(5);
const REFUSAL_RSS_KIB: u64 = 100 << 10;

/// Runs `command` to its end and returns its output, after checking it took less than
/// [`REFUSAL_TIME`] and its peak resident memory (`ru_maxrss` from `wait4`) stayed under
/// [`REFUSAL_RSS_KIB`]. Kills it and fails as soon as either is exceeded (memory is checked
/// as it runs, so a runaway read is stopped early).
fn refused(command: &mut Command, what: &str) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start ctxleak");
    let pid = child.id() as libc::pid_t;
    let started = std::time::Instant::now();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: status and usage are valid for writes; pid is our own child, reaped here
        // only (std's Child is never waited on).
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(reaped >= 0, "wait4: {}", std::io::Error::last_os_error());
        if reaped == pid {
            break;
        }
        let rss = common::vm_rss_kib(child.id()).unwrap_or(0);
        if started.elapsed() > REFUSAL_TIME || rss > REFUSAL_RSS_KIB {
            // SAFETY: kill and wait4 on our own unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::wait4(pid, &mut status, 0, &mut usage);
            }
            panic!(
                "{what}: still running after {:?} with {rss} KiB resident: not refused",
                started.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut child = child;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    if let (Some(out), Some(err)) = (child.stdout.as_mut(), child.stderr.as_mut()) {
        // The child is gone: both pipes are at their end.
        std::io::Read::read_to_end(out, &mut stdout).expect("stdout");
        std::io::Read::read_to_end(err, &mut stderr).expect("stderr");
    }
    let peak = u64::try_from(usage.ru_maxrss).unwrap_or(0);
    eprintln!(
        "{what}: refused in {:?}, peak RSS {peak} KiB",
        started.elapsed()
    );
    assert!(peak < REFUSAL_RSS_KIB, "{what}: peak RSS {peak} KiB");
    Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout,
        stderr,
    }
}

/// `ctxleak inspect PATH` on a file that is not an executable: one line, quickly, small.
fn inspect_refuses(path: &Path) -> String {
    let mut command = ctxleak();
    command.arg("inspect").arg(path);
    one_line_error(&refused(&mut command, &path.display().to_string()))
}

/// A temporary directory, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ctxleak-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `bytes`, then a hole up to `len` bytes (no disk space used).
fn sparse_file(path: &Path, bytes: &[u8], len: u64) {
    std::fs::write(path, bytes).expect("write");
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.set_len(len))
        .expect("extend");
}

#[test]
fn files_that_are_not_executables() {
    let dir = TempDir::new("not-executables");
    let fifo = dir.0.join("fifo");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path; mkfifo only creates the file.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let socket = dir.0.join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("socket");
    let subdir = dir.0.join("dir");
    std::fs::create_dir(&subdir).expect("dir");
    for (path, what) in [
        (Path::new("/dev/zero"), "a character device"),
        (Path::new("/dev/urandom"), "a character device"),
        (&fifo, "a FIFO (named pipe)"),
        (&subdir, "a directory"),
        (&socket, "a socket"),
    ] {
        assert_eq!(
            inspect_refuses(path),
            format!(
                "ctxleak: error: {} is {what}, not an executable file: give the path of a Go program",
                path.display()
            )
        );
    }
    let empty = dir.0.join("empty");
    std::fs::write(&empty, "").expect("write");
    let text = dir.0.join("text");
    std::fs::write(&text, "hello\n").expect("write");
    let zeros = dir.0.join("zeros");
    sparse_file(&zeros, b"", 20 << 30);
    for path in [&empty, &text, &zeros] {
        assert_eq!(
            inspect_refuses(path),
            format!(
                "ctxleak: error: {} is not an ELF executable: ctxleak watches Go programs on Linux",
                path.display()
            )
        );
    }
    // An ELF header claiming 2^24 section headers (1 GiB; extended numbering: e_shnum 0 and
    // the count in section 0's sh_size) over a sparse file: they are not read.
    let mut header =
        std::fs::read(fixture(&newest_go(), "phases")).expect("fixture")[..64].to_vec();
    header[0x28..0x30].copy_from_slice(&64u64.to_le_bytes()); // e_shoff
    header[0x3c..0x3e].copy_from_slice(&0u16.to_le_bytes()); // e_shnum
    let mut section_0 = [0u8; 64];
    section_0[0x20..0x28].copy_from_slice(&(1u64 << 24).to_le_bytes()); // sh_size
    header.extend_from_slice(&section_0);
    let claims = dir.0.join("claims");
    sparse_file(&claims, &header, 2 << 30);
    let line = inspect_refuses(&claims);
    assert!(
        line.ends_with(
            "is not a Go program (it has no .go.buildinfo section): give the PID of a Go process"
        ),
        "{line}"
    );
}

/// A Go program built for another architecture than ctxleak's (the `phases-arm64` fixture,
/// cross-compiled with GOARCH=arm64, on this x86-64 host): one line that names it, not a parse
/// error from deep in its tables. `cargo xtask test-arm64` runs arm64 programs with an arm64
/// ctxleak.
#[test]
fn a_go_program_for_another_architecture() {
    let program = fixture(&newest_go(), "phases-arm64");
    assert_eq!(
        inspect_refuses(&program),
        format!(
            "ctxleak: error: {} is a Go program for arm64, and this ctxleak watches linux/amd64 programs: run the ctxleak built for arm64 on the host (amd64 and arm64 are supported)",
            program.display()
        )
    );
}

/// On arm64 (`cargo xtask test-arm64` runs this) the probes are placed as on x86-64: the
/// attach line counts them and never says memory only, and the budget's trap calibration
/// (`calibrate.rs`, on a `B` in ctxleak's own code) attaches and times a trap on this host. It prints the trap and the hit cost it derived (under qemu TCG: they
/// say nothing about real arm64 hosts).
#[cfg(target_arch = "aarch64")]
#[test]
fn probes_are_placed_on_arm64() {
    let mut phases = Phases::start(&fixture(&newest_go(), "phases"));
    phases.checkpoint();
    let mut command = ctxleak();
    command
        .args(common::attach_args(phases.pid()))
        .args(["--max-overhead", "1%"])
        .env("CTXLEAK_LOG", "debug");
    let ctxleak = Ctxleak::from_command(command, "ctxleak did not attach");
    let attached = ctxleak
        .stderr
        .seen
        .iter()
        .find(|line| line.contains("ctxleak: attached to PID"))
        .expect("an attach line");
    assert!(
        attached.contains(" probes within --max-overhead") && !attached.contains("memory only"),
        "{attached}"
    );
    // Measured; or measured and not believed (under qemu TCG a trap takes about 47 µs, near
    // the 50 µs bound of `PLAUSIBLE_TRAP`): either way the site was attached and timed.
    let measured = ctxleak.stderr.seen.iter().find(|line| {
        line.contains("probe hit cost measured on this host") || line.contains("a trap measured")
    });
    assert!(measured.is_some(), "{:?}", ctxleak.stderr.seen);
    let hit_cost = common::sample(&ctxleak.scrape(), "ctxleak_probe_hit_cost_seconds");
    eprintln!("arm64 trap calibration (emulated CPU): {measured:?}; hit cost {hit_cost:?} s");
}

/// A Go program padded to 20 GiB (a sparse file; it runs as well as before): refused by
/// `inspect`, `inspect --pid` and `attach` alike, without reading it.
#[test]
fn a_go_executable_too_large_to_read() {
    let dir = TempDir::new("too-large");
    let padded = dir.0.join("app");
    let program = std::fs::read(fixture(&newest_go(), "phases")).expect("fixture");
    sparse_file(&padded, &program, 20 << 30);
    std::fs::set_permissions(&padded, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let too_large = format!(
        "{} is 20 GiB, more than the 1 GiB ctxleak reads of an executable: give the path of a Go program",
        padded.display()
    );
    assert_eq!(
        inspect_refuses(&padded),
        format!("ctxleak: error: {too_large}")
    );
    let mut target = Running::start(&padded, &[]);
    let pid = target.pid().to_string();
    let mut inspect = ctxleak();
    inspect.args(["inspect", "--pid", &pid]);
    assert_eq!(
        one_line_error(&refused(&mut inspect, "inspect --pid")),
        format!("ctxleak: error: {too_large}")
    );
    let mut attach = ctxleak();
    attach.args(common::attach_args(target.pid()));
    assert_eq!(
        one_line_error(&refused(&mut attach, "attach --pid")),
        format!("ctxleak: error: PID {pid}: {too_large}")
    );
    assert!(target.is_running());
}

/// A period shorter than its minimum is refused, by a flag as by the daemon's config file,
/// naming the smallest value accepted (`--census-interval 1ns` used to be accepted, and a
/// census every nanosecond burned a core).
#[test]
fn periods_too_short() {
    for (args, line) in [
        (
            &["attach", "--pid", "1", "--census-interval", "1ns"][..],
            "error: invalid value '1ns' for '--census-interval <CENSUS_INTERVAL>': \"1ns\" is too short: give 100ms or more (a census more often costs CPU and shows nothing new)",
        ),
        (
            &["daemon", "--census-interval", "10ms"],
            "error: invalid value '10ms' for '--census-interval <CENSUS_INTERVAL>': \"10ms\" is too short: give 100ms or more (a census more often costs CPU and shows nothing new)",
        ),
        (
            &["daemon", "--rescan-interval", "1ms"],
            "error: invalid value '1ms' for '--rescan-interval <RESCAN_INTERVAL>': \"1ms\" is too short: give 1s or more (the exec tracepoint finds new processes at once; rescans of /proc only catch what it missed)",
        ),
    ] {
        let output = refused(ctxleak().args(args), &args.join(" "));
        let stderr = String::from_utf8_lossy(&output.stderr);
        // A usage error, as clap reports every bad flag: its line, then a pointer to --help.
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().next(), Some(line), "{args:?}: {stderr}");
    }
    let dir = TempDir::new("periods");
    for (text, reason) in [
        (
            "census-interval = \"1ns\"\n",
            "census-interval: \"1ns\" is too short: give 100ms or more",
        ),
        (
            "rescan-interval = \"500ms\"\n",
            "rescan-interval: \"500ms\" is too short: give 1s or more",
        ),
    ] {
        let config = dir.0.join("ctxleak.toml");
        std::fs::write(&config, text).expect("config");
        // Should the value be accepted, the daemon watches nothing and serves on a free port.
        let mut daemon = ctxleak();
        daemon
            .args([
                "daemon",
                "--exe",
                "/nonexistent",
                "--web.listen-address",
                "127.0.0.1:0",
            ])
            .arg("--config")
            .arg(&config);
        let line = one_line_error(&refused(&mut daemon, text.trim()));
        assert!(
            line.starts_with(&format!("ctxleak: error: {}: {reason}", config.display())),
            "{line}"
        );
    }
}
