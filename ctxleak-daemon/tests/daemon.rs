//! `ctxleak daemon` against real processes: it finds Go programs that run before it starts
//! (the scan of /proc) and after (the exec tracepoint: the rescan timer is set to an hour, so
//! nothing else can find them), skips programs that are not Go and processes the filters
//! leave out, shares one attachment between processes of one executable, detaches from
//! processes that exit or exec another program, labels targets with their container and pod
//! from the cgroup, and reads its config file. Every count is checked against the Go
//! runtime's own `runtime.NumGoroutine()`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{Ctxleak, Lines, Phases, fixture, go_versions, sample, wait_for_sample};

const SETTLE: Duration = Duration::from_secs(20);

/// Starts `ctxleak daemon` on a free loopback port with a census every second and no
/// periodic rescan, and waits until its first scan is done.
fn daemon(args: &[&str]) -> Ctxleak {
    let log = std::env::var("CTXLEAK_TEST_LOG").unwrap_or_else(|_| "info".into());
    let mut all = vec!["--census-interval", "1s", "--rescan-interval", "1h"];
    all.extend_from_slice(args);
    Ctxleak::daemon_logging(&log, &all)
}

/// Reads lines until one starts with `prefix` and returns the number that ends it.
fn count_after(stdout: &mut Lines, prefix: &str) -> f64 {
    let line = stdout
        .wait_for(prefix, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no {prefix:?} line: {:?}", stdout.seen));
    line.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count at the end of {line:?}"))
}

/// This test's own folder of programs, and the `--exe` glob of everything in it. Tests in
/// one binary run in parallel and each runs a daemon: each must watch only its own copies.
fn own_folder(test: &str) -> (PathBuf, String) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test's folder");
    let glob = format!("{}/**", dir.display());
    (dir, glob)
}

fn user_goroutines(pid: u32) -> String {
    format!(r#"ctxleak_goroutines{{pid="{pid}",kind="user"}}"#)
}

/// Waits until `series` is `want`, failing with the last value otherwise.
fn expect_sample(ctxleak: &mut Ctxleak, series: &str, want: f64, what: &str) -> Duration {
    match wait_for_sample(ctxleak, series, want, SETTLE) {
        Ok(took) => took,
        Err(last) => {
            let rest = ctxleak.stderr.rest(Duration::from_millis(500));
            panic!(
                "{what}: expected {series} = {want}, last seen {last:?}; daemon said {:?} {rest:?}",
                ctxleak.stderr.seen
            )
        }
    }
}

/// Waits until no series of `pid` is left.
fn expect_no_series(ctxleak: &Ctxleak, pid: u32, what: &str) {
    let label = format!(r#"pid="{pid}""#);
    let start = Instant::now();
    loop {
        let metrics = ctxleak.scrape();
        let left: Vec<&str> = metrics.lines().filter(|l| l.contains(&label)).collect();
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < SETTLE,
            "{what}: series of PID {pid} still served: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A copy of `source` in `dir`: another file (inside or outside a test's glob) with the same
/// content.
fn copy_to(source: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the copy's folder");
    let copy = dir.join(source.file_name().expect("a file name"));
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(source, &copy).expect("copy the program");
    copy
}

#[test]
fn finds_processes_by_scan_and_exec_shares_probes_and_detaches() {
    let versions = go_versions();
    let (oldest, newest) = (&versions[0], &versions[versions.len() - 1]);
    let (dir, glob) = own_folder("daemon-scan");
    let newest_phases = copy_to(&fixture(newest, "phases"), &dir.join("new"));
    let oldest_phases = copy_to(&fixture(oldest, "phases"), &dir.join("old"));

    // Before the daemon: found by the scan of /proc.
    let mut early = Phases::start(&newest_phases);
    early.checkpoint();
    early.advance();
    let (_, early_count) = early.checkpoint();

    let not_go = copy_to(Path::new("/bin/sleep"), &dir.join("not-go"));
    let (outside_dir, _) = own_folder("daemon-scan-outside");
    let elsewhere = copy_to(&fixture(oldest, "phases"), &outside_dir);
    let mut ctxleak = daemon(&["--exe", &glob]);
    expect_sample(
        &mut ctxleak,
        &user_goroutines(early.pid()),
        early_count as f64,
        "a process that ran before the daemon",
    );

    // After the daemon: only the exec tracepoint can find these (no rescan for an hour).
    let mut same_exe = Phases::start(&newest_phases);
    let mut through_shell = Phases::spawn({
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(format!("exec {}", oldest_phases.display()));
        command
    });
    let mut sleeper = Command::new(&not_go)
        .arg("600")
        .spawn()
        .expect("start the non-Go program");
    let mut outside = Phases::start(&elsewhere);
    for phases in [&mut same_exe, &mut through_shell, &mut outside] {
        phases.checkpoint();
        phases.advance();
    }
    let (_, same_count) = same_exe.checkpoint();
    let (_, shell_count) = through_shell.checkpoint();
    outside.checkpoint();
    let took = expect_sample(
        &mut ctxleak,
        &user_goroutines(same_exe.pid()),
        same_count as f64,
        "a process started after the daemon, same executable as one watched",
    );
    expect_sample(
        &mut ctxleak,
        &user_goroutines(through_shell.pid()),
        shell_count as f64,
        "a process that exec'd a Go program from a shell",
    );
    eprintln!(
        "new processes counted right {} ms after their checkpoint",
        took.as_millis()
    );
    expect_sample(&mut ctxleak, "ctxleak_targets", 3.0, "watched processes");
    // Two processes of one file share its probes.
    expect_sample(
        &mut ctxleak,
        "ctxleak_attached_executables",
        2.0,
        "attachments",
    );
    let metrics = ctxleak.scrape();
    for (pid, what) in [
        (sleeper.id(), "a program that is not Go"),
        (outside.pid(), "a Go program outside the --exe filter"),
    ] {
        assert!(
            !metrics.contains(&format!(r#"pid="{pid}""#)),
            "{what} (PID {pid}) must not be watched:\n{metrics}"
        );
    }
    let info = format!(
        r#"ctxleak_target_info{{pid="{}",exe="{}",go_version="go{oldest}",container_id="",pod_uid=""}}"#,
        through_shell.pid(),
        oldest_phases.display()
    );
    assert_eq!(sample(&metrics, &info), Some(1.0), "{info} in\n{metrics}");

    // The API lists every target, and answers per PID.
    let targets = common::http_get(&ctxleak.metrics_url, "/api/targets");
    for pid in [early.pid(), same_exe.pid(), through_shell.pid()] {
        assert!(targets.contains(&format!(r#""pid":{pid}"#)), "{targets}");
    }
    let (status, body) = common::http_get_status(&ctxleak.metrics_url, "/api/groups");
    assert_eq!(status, 400, "several targets need ?pid=N: {body}");
    let groups = common::http_get(
        &ctxleak.metrics_url,
        &format!("/api/groups?pid={}", through_shell.pid()),
    );
    assert!(
        groups.contains(&format!(r#""pid":{}"#, through_shell.pid())),
        "{groups}"
    );

    // One of the two processes of a file exits: the other is still watched, through the
    // same probes, and its counts still follow it.
    let gone = same_exe.pid();
    same_exe.finish();
    expect_no_series(&ctxleak, gone, "a process that exited");
    expect_sample(&mut ctxleak, "ctxleak_targets", 2.0, "after one exit");
    expect_sample(
        &mut ctxleak,
        "ctxleak_attached_executables",
        2.0,
        "a file still in use",
    );
    early.advance();
    let (_, early_count) = early.checkpoint();
    expect_sample(
        &mut ctxleak,
        &user_goroutines(early.pid()),
        early_count as f64,
        "the process left running the shared executable",
    );
    // The last process of a file exits: its probes go.
    let gone = early.pid();
    early.finish();
    expect_no_series(&ctxleak, gone, "the last process of a file");
    expect_sample(
        &mut ctxleak,
        "ctxleak_attached_executables",
        1.0,
        "a file no longer run",
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn a_watched_process_that_execs_is_dropped_and_its_new_program_judged_afresh() {
    let versions = go_versions();
    let newest = &versions[versions.len() - 1];
    let (dir, glob) = own_folder("daemon-exec");
    let execs = copy_to(&fixture(newest, "execs"), &dir);
    let phases = copy_to(&fixture(&versions[0], "phases"), &dir);
    let mut ctxleak = daemon(&["--exe", &glob]);

    // A Go program that execs a non-Go one: watched, then not at all.
    let mut child = Command::new(&execs)
        .arg("/bin/sleep")
        .arg("600")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start execs");
    let pid = child.id();
    let mut stdout = Lines::new(child.stdout.take().expect("stdout"));
    let count = count_after(&mut stdout, "ready goroutines ");
    expect_sample(
        &mut ctxleak,
        &user_goroutines(pid),
        count,
        "the Go program before exec",
    );
    drop(child.stdin.take()); // EOF: it execs.
    expect_no_series(
        &ctxleak,
        pid,
        "a process that exec'd a program that is not Go",
    );
    expect_sample(&mut ctxleak, "ctxleak_targets", 0.0, "after the exec");
    expect_sample(
        &mut ctxleak,
        "ctxleak_attached_executables",
        0.0,
        "after the exec",
    );
    assert!(
        common::wait_timeout(&mut child, Duration::from_millis(100)).is_none(),
        "the process itself lives on"
    );
    let _ = child.kill();
    let _ = child.wait();

    // A Go program that execs another Go program, keeping its PID: the new program is
    // watched with its own executable and counts.
    let mut child = Command::new(&execs)
        .arg(&phases)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start execs");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = Lines::new(child.stdout.take().expect("stdout"));
    stdout
        .wait_for("ready goroutines ", Duration::from_secs(30))
        .expect("execs printed no ready line");
    expect_sample(
        &mut ctxleak,
        &user_goroutines(pid),
        count,
        "the first Go program",
    );
    std::io::Write::write_all(&mut stdin, b"\n").expect("tell execs to exec");
    let start_count = count_after(&mut stdout, "checkpoint start goroutines ");
    expect_sample(
        &mut ctxleak,
        &format!(
            r#"ctxleak_target_info{{pid="{pid}",exe="{}",go_version="go{}",container_id="",pod_uid=""}}"#,
            phases.display(),
            versions[0]
        ),
        1.0,
        "the program after exec, by its own executable",
    );
    expect_sample(
        &mut ctxleak,
        &user_goroutines(pid),
        start_count,
        "the program after exec",
    );
    expect_sample(
        &mut ctxleak,
        "ctxleak_attached_executables",
        1.0,
        "only the new program's file",
    );
    drop(stdin);
    let _ = common::wait_timeout(&mut child, Duration::from_secs(30));
    expect_no_series(&ctxleak, pid, "the second program, after it exited");
}

/// Where cgroup v2 is mounted (on a hybrid host, beside the v1 hierarchies).
fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    mounts
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
        })
        .expect("no cgroup2 mount: this test moves a process into a cgroup of its own")
}

/// Cgroups made for a test, removed (deepest first) once their processes are gone.
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn labels_targets_with_their_container_and_pod_and_filters_by_cgroup() {
    let versions = go_versions();
    let (dir, exe_glob) = own_folder("daemon-cgroup");
    let phases = copy_to(&fixture(&versions[versions.len() - 1], "phases"), &dir);
    // What the kubelet's systemd cgroup driver makes for a Burstable pod's container
    // under containerd, below a folder of this test's own.
    let pod_uid = "0f3c2a9e-5d1b-4c7a-9e2f-1a2b3c4d5e6f";
    let container_id = "4e1b7a3c9d2f8e6b5a4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
    let top = format!("ctxleak-test-{}", std::process::id());
    let pod = format!("kubepods-burstable-pod{}.slice", pod_uid.replace('-', "_"));
    let scope = format!("cri-containerd-{container_id}.scope");
    let root = cgroup2_mount();
    let dirs = Cgroups(vec![
        root.join(&top),
        root.join(&top).join(&pod),
        root.join(&top).join(&pod).join(&scope),
    ]);
    for dir in &dirs.0 {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("cannot create the cgroup {}: {e}", dir.display()));
    }
    let procs = dirs.0[2].join("cgroup.procs");

    let glob = format!("/{top}/**");
    let mut ctxleak = daemon(&["--exe", &exe_glob, "--cgroup", &glob]);
    let mut outside = Phases::start(&phases);
    // The shell moves itself into the container's cgroup, then becomes the Go program.
    let mut inside = Phases::spawn({
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(format!(
            "echo $$ > {} && exec {}",
            procs.display(),
            phases.display()
        ));
        command
    });
    let (_, count) = inside.checkpoint();
    outside.checkpoint();
    let info = format!(
        r#"ctxleak_target_info{{pid="{}",exe="{}",go_version="go{}",container_id="{container_id}",pod_uid="{pod_uid}"}}"#,
        inside.pid(),
        phases.display(),
        versions[versions.len() - 1],
    );
    expect_sample(&mut ctxleak, &info, 1.0, "a process in a pod's container");
    expect_sample(
        &mut ctxleak,
        &user_goroutines(inside.pid()),
        count as f64,
        "a process in a pod's container",
    );
    let metrics = ctxleak.scrape();
    assert!(
        !metrics.contains(&format!(r#"pid="{}""#, outside.pid())),
        "a process outside the --cgroup filter must not be watched:\n{metrics}"
    );
    inside.finish();
    outside.finish();
    drop(ctxleak);
    drop(dirs);
}

#[test]
fn reads_its_config_file_and_flags_override_it() {
    let versions = go_versions();
    let (oldest, newest) = (&versions[0], &versions[versions.len() - 1]);
    let (dir, _) = own_folder("daemon-config");
    let newest_phases = copy_to(&fixture(newest, "phases"), &dir.join("new"));
    let oldest_phases = copy_to(&fixture(oldest, "phases"), &dir.join("old"));
    let config = dir.join("ctxleak.toml");
    // The file: JSON logs and only the oldest version's folder; the --exe flag names the
    // newest one's and must win, while the file's other keys still apply.
    std::fs::write(
        &config,
        format!(
            "exe = [\"{}/old/*\"]\n\n[log]\nformat = \"json\"\n",
            dir.display()
        ),
    )
    .expect("write the config");
    let flag_glob = format!("{}/new/*", dir.display());
    let mut ctxleak = daemon(&[
        "--config",
        config.to_str().expect("a UTF-8 path"),
        "--exe",
        &flag_glob,
    ]);
    let mut selected = Phases::start(&newest_phases);
    let mut left_out = Phases::start(&oldest_phases);
    let (_, count) = selected.checkpoint();
    left_out.checkpoint();
    expect_sample(
        &mut ctxleak,
        &user_goroutines(selected.pid()),
        count as f64,
        "a program the --exe flag selects",
    );
    let metrics = ctxleak.scrape();
    assert!(
        !metrics.contains(&format!(r#"pid="{}""#, left_out.pid())),
        "the flag's --exe replaces the file's: a program only the file selects must not be watched:\n{metrics}"
    );
    // JSON logs, as the file asked: the attach of the selected process is one object.
    let attached = ctxleak
        .stderr
        .wait_for(&format!(r#""pid":{}"#, selected.pid()), SETTLE)
        .unwrap_or_else(|| panic!("no JSON log line for the attach: {:?}", ctxleak.stderr.seen));
    let log: serde_json::Value = serde_json::from_str(&attached)
        .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {attached}"));
    assert_eq!(log["message"], "attached", "{attached}");
    assert_eq!(log["go_version"], format!("go{newest}"), "{attached}");
    selected.finish();
    left_out.finish();
    ctxleak.signal(libc::SIGTERM);
    let status =
        common::wait_timeout(&mut ctxleak.child, SETTLE).expect("the daemon stops on SIGTERM");
    assert!(status.success(), "SIGTERM is a clean stop: {status}");

    // A mistake in the file is one line naming the key, before anything is attached.
    std::fs::write(&config, "census-intreval = \"5s\"\n").expect("write the config");
    let output = common::ctxleak()
        .args(["daemon", "--config", config.to_str().expect("a UTF-8 path")])
        .output()
        .expect("run ctxleak daemon");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("census-intreval"),
        "names the key: {stderr}"
    );
}

/// The capabilities deploy/systemd/ctxleak.service grants its unprivileged dynamic user.
const UNIT_CAPABILITIES: &str = "+sys_admin,+bpf,+perfmon,+sys_ptrace,+dac_read_search";

#[test]
fn runs_as_an_unprivileged_user_with_the_units_capabilities_only() {
    let versions = go_versions();
    let (dir, glob) = own_folder("daemon-unprivileged");
    let phases = copy_to(&fixture(&versions[versions.len() - 1], "phases"), &dir);
    // The target runs as root; the daemon as nobody with exactly the unit's capabilities
    // (ambient, as systemd's AmbientCapabilities= gives them).
    let mut before = Phases::start(&phases);
    let (_, before_count) = before.checkpoint();
    let mut command = Command::new("setpriv");
    command.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!("--inh-caps={UNIT_CAPABILITIES}"),
        &format!("--ambient-caps={UNIT_CAPABILITIES}"),
        "--",
    ]);
    command.arg(env!("CARGO_BIN_EXE_ctxleak")).args([
        "daemon",
        "--web.listen-address",
        "127.0.0.1:0",
        "--rescan-interval",
        "1h",
        "--exe",
        &glob,
    ]);
    let mut ctxleak = Ctxleak::from_command(command, "the unprivileged daemon did not start");
    expect_sample(
        &mut ctxleak,
        &user_goroutines(before.pid()),
        before_count as f64,
        "a root process found by the scan, by an unprivileged daemon",
    );
    // And one started later: the exec tracepoint works with these capabilities too.
    let mut after = Phases::start(&phases);
    let (_, after_count) = after.checkpoint();
    expect_sample(
        &mut ctxleak,
        &user_goroutines(after.pid()),
        after_count as f64,
        "a root process found by the exec tracepoint, by an unprivileged daemon",
    );
    expect_sample(
        &mut ctxleak,
        "ctxleak_attach_failures_total",
        0.0,
        "no failure",
    );
    before.finish();
    after.finish();
}

#[test]
fn without_privileges_the_daemon_says_which_and_exits() {
    let output = Command::new("setpriv")
        .args(["--bounding-set=-sys_admin", "--inh-caps=-all", "--"])
        .arg(env!("CARGO_BIN_EXE_ctxleak"))
        .args(["daemon", "--web.listen-address", "127.0.0.1:0"])
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("lacks the privileges to load eBPF programs")
            && stderr.contains("CAP_SYS_ADMIN"),
        "{stderr}"
    );
}
