//! ctxleak's user-goroutine gauge equals the target's own `runtime.NumGoroutine()` at every
//! quiescent checkpoint, for every supported Go version, including goroutines that existed
//! before ctxleak attached; detaching (SIGINT) and the target exiting are both clean.

use std::time::Duration;

use crate::common;
use crate::common::{Ctxleak, Phases, fixture, go_versions, sample, wait_for_sample, wait_timeout};

/// Generous: the value is normally right within milliseconds of a checkpoint; this only
/// bounds how long a wrong value is waited on before the test fails.
const SETTLE: Duration = Duration::from_secs(15);

struct Outcome {
    /// Go version and build, e.g. "1.25.5 phases-pie".
    version: String,
    lost: f64,
    resyncs: f64,
    checkpoints: Vec<String>,
    failures: Vec<String>,
}

fn check_version(version: &str, ctxleak_args: &[&str]) -> Outcome {
    check_build(version, "phases", ctxleak_args)
}

fn check_build(version: &str, build: &str, ctxleak_args: &[&str]) -> Outcome {
    check_command(
        &format!("{version} {build}"),
        std::process::Command::new(fixture(version, build)),
        ctxleak_args,
    )
}

fn check_command(label: &str, command: std::process::Command, ctxleak_args: &[&str]) -> Outcome {
    let mut outcome = Outcome {
        version: label.to_owned(),
        lost: 0.0,
        resyncs: 0.0,
        checkpoints: Vec::new(),
        failures: Vec::new(),
    };
    let mut phases = Phases::spawn(command);
    let pid = phases.pid();
    let user = format!(r#"ctxleak_goroutines{{pid="{pid}",kind="user"}}"#);
    let system = format!(r#"ctxleak_goroutines{{pid="{pid}",kind="system"}}"#);

    // "start", then "pre-attach": 300 goroutines exist before ctxleak does.
    phases.checkpoint();
    phases.advance();
    let (name, before_attach) = phases.checkpoint();
    assert_eq!(name, "pre-attach");
    // A census every second (unless the caller sets the interval): the event-driven count is
    // reconciled with memory throughout.
    let census_every = if ctxleak_args.contains(&"--census-interval") {
        &[][..]
    } else {
        &["--census-interval", "1s"][..]
    };
    let args: Vec<&str> = census_every.iter().chain(ctxleak_args).copied().collect();
    let ctxleak = Ctxleak::attach_with(pid, &args);

    let check = |name: &str, want: u64, outcome: &mut Outcome| {
        match wait_for_sample(&ctxleak, &user, want as f64, SETTLE) {
            Ok(took) => {
                // Still equal a moment later: the gauge settled, it did not pass through.
                std::thread::sleep(Duration::from_millis(200));
                let again = sample(&ctxleak.scrape(), &user);
                if again != Some(want as f64) {
                    outcome.failures.push(format!("{name}: runtime says {want}, ctxleak said {want} then {again:?}"));
                }
                outcome.checkpoints.push(format!("{name}={want} ({} ms)", took.as_millis()));
            }
            Err(last) => outcome.failures.push(format!(
                "{name}: runtime.NumGoroutine() = {want}, ctxleak's gauge = {last:?} after {SETTLE:?}"
            )),
        }
    };

    check("pre-attach", before_attach, &mut outcome);
    let metrics = ctxleak.scrape();
    if sample(&metrics, &system).unwrap_or(0.0) < 1.0 {
        outcome
            .failures
            .push(format!("no system goroutines reported: {metrics}"));
    }
    loop {
        phases.advance();
        let (name, want) = phases.checkpoint();
        check(&name, want, &mut outcome);
        if name == "final" {
            break;
        }
    }
    // Memory only, the system count too (the runtime's `sched.ngsys`, less what a census does
    // not count), against a census taken now (asking for the groups takes one), while the
    // target stands still at its last checkpoint.
    let memory_only = ctxleak_args
        .windows(2)
        .any(|pair| pair == ["--max-overhead", "0"]);
    let gauge = sample(&ctxleak.scrape(), &system);
    let body = common::http_get(&ctxleak.metrics_url, "/api/groups");
    let census = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|groups| groups["goroutines_system"].as_f64());
    if memory_only && (gauge.is_none() || gauge != census) {
        outcome.failures.push(format!(
            "final: {gauge:?} system goroutines by the gauge, {census:?} by a census"
        ));
    }
    let metrics = ctxleak.scrape();
    let lost = sample(&metrics, "ctxleak_events_lost_total").unwrap_or(-1.0);
    let resyncs = sample(
        &metrics,
        &format!(r#"ctxleak_resyncs_total{{pid="{pid}"}}"#),
    )
    .unwrap_or(-1.0);
    outcome
        .checkpoints
        .push(format!("events lost: {lost}, resyncs: {resyncs}"));
    outcome.lost = lost;
    outcome.resyncs = resyncs;
    let disagreements = sample(
        &metrics,
        &format!(r#"ctxleak_census_disagreements_total{{pid="{pid}"}}"#),
    )
    .unwrap_or(-1.0);
    if lost == 0.0 && disagreements != 0.0 {
        outcome.failures.push(format!(
            "events and census disagreed {disagreements} times with no event lost"
        ));
    }

    // Ctrl-C detaches cleanly and leaves the target running unharmed.
    ctxleak.signal(libc::SIGINT);
    let mut ctxleak = ctxleak;
    match wait_timeout(&mut ctxleak.child, Duration::from_secs(10)) {
        Some(status) if status.success() => {}
        other => outcome
            .failures
            .push(format!("ctxleak did not exit cleanly on SIGINT: {other:?}")),
    }
    if ctxleak
        .stderr
        .wait_for("detached from PID", Duration::from_secs(5))
        .is_none()
    {
        outcome
            .failures
            .push(format!("no detach message: {:?}", ctxleak.stderr.seen));
    }
    // The target still works after the probes are gone: one more phase, then a clean exit.
    if phases.child.try_wait().ok().flatten().is_some() {
        outcome
            .failures
            .push("the target died when ctxleak detached".into());
    } else {
        let status = phases.finish();
        if !status.success() {
            outcome.failures.push(format!(
                "the target exited with {status} after ctxleak detached"
            ));
        }
    }
    outcome
}

#[test]
fn user_goroutines_match_runtime_numgoroutine_on_every_go_version() {
    let versions = go_versions();
    // Every supported version under `cargo xtask test`; the oldest and newest under `cargo
    // xtask test-arm64`, where emulation is slow.
    let edges = (versions.first(), versions.last());
    assert!(
        matches!(edges, (Some(oldest), Some(newest)) if oldest.starts_with("1.21.") && newest.starts_with("1.27.")),
        "expected Go 1.21 through 1.27, got {versions:?}"
    );
    let outcomes: Vec<Outcome> = versions
        .iter()
        .map(|version| check_version(version, &[]))
        .collect();
    report(&outcomes);
}

/// The same on stripped builds (`-s -w`: no symbols, no DWARF; layouts from the offset
/// table, functions from .gopclntab, runtime.allgs from runtime.forEachG's code) and
/// position-independent builds (a load bias to apply), for every version, and on cgo builds
/// (dynamically linked, with the runtime's extra Ms for C callers).
#[test]
fn stripped_pie_and_cgo_builds_are_counted_exactly() {
    let mut outcomes = Vec::new();
    let mut cgo_builds = 0;
    for version in go_versions() {
        for build in ["phases-stripped", "phases-pie", "phases-pie-stripped"] {
            outcomes.push(check_build(&version, build, &[]));
        }
        let cgo = common::fixtures_dir()
            .join(format!("go{version}"))
            .join("phases-cgo");
        if cgo.is_file() {
            cgo_builds += 1;
            outcomes.push(check_build(&version, "phases-cgo", &[]));
        }
    }
    assert!(
        cgo_builds >= 2,
        "expected cgo fixtures for at least two Go versions, found {cgo_builds}"
    );
    report(&outcomes);
}

/// Memory only, with no census between the checkpoints (the first comes after a minute):
/// the gauge every second is the runtime's own arithmetic (`gcount`: `len(allgs)` minus the
/// free lists and `sched.ngsys`, read from memory), and it must be exactly
/// `runtime.NumGoroutine()` at every checkpoint, on the oldest and newest Go, with and
/// without symbols, and on the newest's cgo build (whose extra M's dead g is in `ngsys`).
#[test]
fn memory_only_counts_by_the_runtimes_own_arithmetic() {
    let versions = go_versions();
    let (oldest, newest) = (
        versions.first().expect("a Go version"),
        versions.last().expect("a Go version"),
    );
    let args = ["--max-overhead", "0", "--census-interval", "60s"];
    let mut outcomes = Vec::new();
    for version in [oldest, newest] {
        for build in ["phases", "phases-stripped", "phases-pie-stripped"] {
            outcomes.push(check_build(version, build, &args));
        }
    }
    outcomes.push(check_build(newest, "phases-cgo", &args));
    report(&outcomes);
}

fn report(outcomes: &[Outcome]) {
    let mut failed = false;
    for outcome in outcomes {
        eprintln!("go{}: {}", outcome.version, outcome.checkpoints.join(", "));
        for failure in &outcome.failures {
            failed = true;
            eprintln!("go{}: FAILED {failure}", outcome.version);
        }
    }
    assert!(!failed, "ctxleak disagreed with the Go runtime (see above)");
}

/// With a one-page ring buffer the churn phase (20 000 goroutines in bursts) overflows it:
/// the losses must be counted, and the live set re-read from memory so the counts stay exact.
#[test]
fn lost_events_are_counted_and_counts_stay_exact() {
    let outcome = check_version(&common::newest_go(), &["--ring-buffer-size", "4096"]);
    report(std::slice::from_ref(&outcome));
    assert!(
        outcome.lost > 0.0,
        "a 4 KiB ring buffer lost no events under churn: the test proves nothing"
    );
    assert!(
        outcome.resyncs > 0.0,
        "events were lost but the live set was never re-read"
    );
}

/// A target whose executable exists only in its own mount namespace, as in a container: the
/// path it was started from does not exist for ctxleak, which must reach the file through
/// /proc/PID/exe (and find its PIE mapping by inode, not by path).
#[test]
fn a_target_in_another_mount_namespace() {
    let version = common::newest_go();
    let binary = fixture(&version, "phases-pie");
    let mountpoint = std::env::temp_dir().join(format!("ctxleak-mntns-{}", std::process::id()));
    std::fs::create_dir_all(&mountpoint).expect("mount point");
    let app = mountpoint.join("app");
    let mut command = std::process::Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs ctxleak {dir} && cp {binary} {app} && exec {app}",
            dir = mountpoint.display(),
            binary = binary.display(),
            app = app.display(),
        ));
    let outcome = check_command(
        &format!("{version} phases-pie in a mount namespace"),
        command,
        &[],
    );
    assert!(
        !app.exists(),
        "the executable must be invisible outside the target's namespace"
    );
    let _ = std::fs::remove_dir(&mountpoint);
    report(std::slice::from_ref(&outcome));
}

#[test]
fn a_target_that_exits_is_noticed_and_ctxleak_exits_cleanly() {
    let version = common::newest_go();
    let mut phases = Phases::start(&fixture(&version, "phases"));
    phases.checkpoint();
    let mut ctxleak = Ctxleak::attach(phases.pid());
    let pid = phases.pid();
    // Closing stdin makes the fixture exit.
    assert!(phases.finish().success());
    let status =
        wait_timeout(&mut ctxleak.child, Duration::from_secs(10)).expect("ctxleak kept running");
    assert!(status.success(), "ctxleak exited with {status}");
    let line = ctxleak.stderr.wait_for("exited", Duration::from_secs(5));
    assert_eq!(
        line.as_deref(),
        Some(format!("ctxleak: PID {pid} exited; detached").as_str())
    );
}
