//! Stopping ctxleak: `ctxleak attach` and `ctxleak daemon` end promptly on SIGTERM, and their
//! probes leave the target afterwards (a helper process removes them in the background; see
//! the `release` module). Whether a probe is in place is read from the target itself: a
//! uprobe is an int3 (0xCC) written over the instruction, visible in /proc/PID/mem.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{Ctxleak, Phases, fixture, newest_go, wait_timeout};

/// A requirement, not a measurement: ctxleak exits within this of SIGTERM (it takes tens
/// of milliseconds; removing the probes, done after it, takes about 0.1 s each).
const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// How long the probes may take to go once ctxleak has exited.
const PROBES_GONE_WITHIN: Duration = Duration::from_secs(60);

/// The link-time addresses of the goroutine probes in `binary`, from `ctxleak inspect`.
fn probe_addresses(binary: &Path) -> Vec<u64> {
    let output = common::ctxleak()
        .args(["inspect", "--json"])
        .arg(binary)
        .output()
        .expect("run ctxleak inspect");
    assert!(
        output.status.success(),
        "ctxleak inspect failed: {output:?}"
    );
    let inspection: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("inspect --json prints JSON");
    let created = inspection["probe_goroutine_created"]
        .as_array()
        .expect("probe_goroutine_created");
    let addresses: Vec<u64> = created
        .iter()
        .chain([&inspection["probe_goroutine_exited"]])
        .map(|probe| probe["pc"].as_u64().expect("a probe pc"))
        .collect();
    assert!(addresses.len() >= 2, "{inspection}");
    addresses
}

/// How many of `addresses` hold an int3 in `pid`'s memory now (the fixture is not PIE: its
/// link-time addresses are its run-time ones).
fn traps(pid: u32, addresses: &[u64]) -> usize {
    let mut memory =
        std::fs::File::open(format!("/proc/{pid}/mem")).expect("open the target's memory");
    addresses
        .iter()
        .filter(|&&address| {
            let mut byte = [0u8];
            memory
                .seek(SeekFrom::Start(address))
                .and_then(|_| memory.read_exact(&mut byte))
                .expect("read the target's code");
            byte[0] == 0xCC
        })
        .count()
}

/// The `ctxleak release-probes --parent PID` helpers still running for `parent`.
fn helpers_of(parent: u32) -> Vec<u32> {
    let wanted = format!("--parent\0{parent}\0");
    std::fs::read_dir("/proc")
        .expect("list /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&wanted))
        })
        .collect()
}

/// SIGTERM to `ctxleak`: it exits within [`EXIT_WITHIN`] with status 0, saying `farewell`,
/// and every probe leaves the target soon after, the helper with them.
fn stop_and_check(mut ctxleak: Ctxleak, target: u32, addresses: &[u64], farewell: &str) {
    let during = traps(target, addresses);
    assert_eq!(
        during,
        addresses.len(),
        "every probe is in place while attached"
    );
    let ctxleak_pid = ctxleak.child.id();
    let start = Instant::now();
    ctxleak.signal(libc::SIGTERM);
    let status = wait_timeout(&mut ctxleak.child, EXIT_WITHIN);
    let took = start.elapsed();
    let said = ctxleak.stderr.rest(Duration::from_secs(5));
    assert!(
        status.is_some_and(|status| status.success()),
        "ctxleak did not exit cleanly within {EXIT_WITHIN:?} of SIGTERM: {status:?}; it said {said:?}"
    );
    assert!(
        said.iter().any(|line| line.contains(farewell)),
        "no {farewell:?} line: {said:?}"
    );
    while traps(target, addresses) > 0 {
        assert!(
            start.elapsed() < PROBES_GONE_WITHIN,
            "probes still in the target {:?} after SIGTERM",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let gone = start.elapsed();
    while !helpers_of(ctxleak_pid).is_empty() {
        assert!(
            start.elapsed() < PROBES_GONE_WITHIN,
            "the helper of {ctxleak_pid} still runs {:?} after SIGTERM",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "exited {took:?} after SIGTERM; probes gone after {gone:?}, helper after {:?}",
        start.elapsed()
    );
}

#[test]
fn attach_exits_at_once_on_sigterm_and_its_probes_leave_the_target() {
    let binary = fixture(&newest_go(), "phases");
    let addresses = probe_addresses(&binary);
    let mut phases = Phases::start(&binary);
    phases.checkpoint();
    assert_eq!(
        traps(phases.pid(), &addresses),
        0,
        "no probe before attaching"
    );
    let ctxleak = Ctxleak::attach_with(phases.pid(), &["--max-overhead", "exact"]);
    stop_and_check(ctxleak, phases.pid(), &addresses, "detached from PID");
    // The target lives on, unharmed: its next phase, then a clean exit.
    phases.advance();
    phases.checkpoint();
    assert!(
        phases.finish().success(),
        "the target failed after ctxleak left"
    );
}

#[test]
fn daemon_exits_at_once_on_sigterm_and_its_probes_leave_the_target() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stop-daemon");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test's folder");
    let binary = dir.join("phases");
    std::fs::copy(fixture(&newest_go(), "phases"), &binary).expect("copy the fixture");
    let addresses = probe_addresses(&binary);
    let mut phases = Phases::start(&binary);
    phases.checkpoint();
    let glob = format!("{}/*", dir.display());
    let ctxleak = Ctxleak::daemon_logging(
        "info",
        &[
            "--exe",
            &glob,
            "--max-overhead",
            "exact",
            "--rescan-interval",
            "1h",
        ],
    );
    // Its first scan, done before it says where its metrics are, found the fixture.
    assert!(
        ctxleak
            .stderr
            .seen
            .iter()
            .any(|line| line.contains("attached")),
        "the daemon did not attach to the fixture: {:?}",
        ctxleak.stderr.seen
    );
    stop_and_check(ctxleak, phases.pid(), &addresses, "daemon stopped");
    phases.advance();
    phases.checkpoint();
    assert!(
        phases.finish().success(),
        "the target failed after ctxleak left"
    );
}

/// The `link_type` of each eBPF link `pid` holds, from its fdinfo.
fn link_types(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list ctxleak's descriptors")
        .filter_map(Result::ok)
        .filter(|entry| {
            std::fs::read_link(entry.path())
                .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf_link")
        })
        .filter_map(|entry| {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                entry.file_name().to_str()?
            ))
            .ok()?;
            info.lines()
                .find_map(|line| line.strip_prefix("link_type:"))
                .map(|kind| kind.trim().to_owned())
        })
        .collect()
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// Where the kernel has them (6.6+), an executable's probes are one `uprobe_multi` link per
/// program, whose removal takes every breakpoint out after one grace period, instead of one
/// perf-event link per place, removed one grace period after another (ctxleak-daemon's
/// `multi` module). Older kernels get perf-event links, and probes all the same.
#[test]
fn probes_are_uprobe_multi_links_where_the_kernel_has_them() {
    let binary = fixture(&newest_go(), "phases");
    let mut phases = Phases::start(&binary);
    phases.checkpoint();
    let ctxleak = Ctxleak::attach_with(phases.pid(), &["--max-overhead", "exact"]);
    let kinds = link_types(ctxleak.child.id());
    let multi = kinds.iter().filter(|kind| *kind == "uprobe_multi").count();
    let perf = kinds.iter().filter(|kind| *kind == "perf").count();
    if kernel_at_least(6, 6) {
        // Goroutines created (a program per register the new g is in: one or two) and
        // exited; the fixture makes no contexts.
        assert!(multi >= 2, "uprobe_multi links: {kinds:?}");
        assert_eq!(perf, 0, "no perf-event uprobe left: {kinds:?}");
    } else {
        assert!(perf >= 2, "perf-event links: {kinds:?}");
    }
    drop(ctxleak);
    phases.advance();
    phases.checkpoint();
    assert!(phases.finish().success());
}
