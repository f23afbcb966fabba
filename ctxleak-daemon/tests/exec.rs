//! `ctxleak attach` on a process that execs (the `execs` fixture: a Go program that execs
//! another program on a line on stdin, keeping its PID): a Go program in its place is
//! followed, counted exactly against its own `ready goroutines N` line; any other program
//! ends attach with one line and status 0; an exec while ctxleak attaches is said as such.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::common;
use crate::common::{Ctxleak, Driven, Lines, fixture, go_versions, wait_for_sample, wait_timeout};

const SETTLE: Duration = Duration::from_secs(20);

/// The `execs` fixture, told to exec `then` (and its arguments) on a line on stdin.
struct Execs(Driven);

impl Execs {
    fn start(binary: &Path, then: &[&str]) -> Self {
        Self(Driven::start_with(binary, then))
    }

    fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// The running program's own count: `runtime.NumGoroutine()` on its ready line.
    fn ready(&mut self) -> f64 {
        let line = self
            .0
            .line_with("ready goroutines ", SETTLE)
            .unwrap_or_else(|seen| panic!("no ready line: {seen}"));
        line.rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count at the end of {line:?}"))
    }

    /// Lets the running program exec its successor.
    fn exec(&mut self) {
        self.0.send("");
    }
}

/// A copy of `source` in this test's own folder: another file, so that its series name it.
fn copy(source: &Path, test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    std::fs::create_dir_all(&dir).expect("create the test's folder");
    let copy = dir.join(source.file_name().expect("a file name"));
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(source, &copy).expect("copy the program");
    copy
}

fn expect_sample(ctxleak: &Ctxleak, series: &str, want: f64, what: &str) {
    if let Err(last) = wait_for_sample(ctxleak, series, want, SETTLE) {
        panic!(
            "{what}: expected {series} = {want}, last seen {last:?}; ctxleak said {:?}",
            ctxleak.stderr.seen
        );
    }
}

#[test]
fn attach_follows_a_go_program_the_target_execs_and_ends_at_one_that_is_not_go() {
    let versions = go_versions();
    let (oldest, newest) = (&versions[0], &versions[versions.len() - 1]);
    // The newest Go's execs, which execs the oldest's, which execs sleep.
    let second = copy(&fixture(oldest, "execs"), "exec-follow");
    let second_path = second.display().to_string();
    let mut target = Execs::start(
        &fixture(newest, "execs"),
        &[&second_path, "/bin/sleep", "600"],
    );
    let pid = target.pid();
    let first_count = target.ready();
    let mut ctxleak = Ctxleak::attach(pid);
    let user = format!(r#"ctxleak_goroutines{{pid="{pid}",kind="user"}}"#);
    expect_sample(&ctxleak, &user, first_count, "the first program");

    target.exec();
    let second_count = target.ready();
    let followed = ctxleak
        .stderr
        .wait_for("exec'd", SETTLE)
        .unwrap_or_else(|| panic!("no exec line: {:?}", ctxleak.stderr.seen));
    let want = format!("ctxleak: PID {pid} exec'd {second_path} (go{oldest}); watching it now (");
    assert!(
        followed.starts_with(&want) && followed.ends_with(" probes)"),
        "{followed:?} is not {want:?}... probes)"
    );
    expect_sample(
        &ctxleak,
        &format!(
            r#"ctxleak_target_info{{pid="{pid}",exe="{second_path}",go_version="go{oldest}",container_id="",pod_uid=""}}"#
        ),
        1.0,
        "the second program, by its own executable",
    );
    expect_sample(&ctxleak, &user, second_count, "the second program");

    target.exec();
    let status = wait_timeout(&mut ctxleak.child, SETTLE);
    let said = ctxleak.stderr.rest(Duration::from_secs(5));
    let sleep = std::fs::canonicalize("/bin/sleep").expect("/bin/sleep");
    assert_eq!(
        said,
        [format!(
            "ctxleak: PID {pid} exec'd {}, which is not a Go program; detached",
            sleep.display()
        )],
        "ctxleak's last words"
    );
    assert!(
        status.is_some_and(|status| status.success()),
        "attach did not end with status 0 after an exec of a program that is not Go: {status:?}"
    );
    assert!(
        target.0.child.try_wait().ok().flatten().is_none(),
        "the process itself lives on"
    );
}

/// What `ctxleak attach` said and its status, on a target told to exec `sleep` `delay` after
/// ctxleak started: the exec lands before, while or after ctxleak attaches.
fn attach_racing_an_exec(delay: Duration) -> (Vec<String>, Option<std::process::ExitStatus>) {
    let mut target = Execs::start(
        &fixture(&common::newest_go(), "execs"),
        &["/bin/sleep", "600"],
    );
    target.ready();
    let mut ctxleak = common::ctxleak()
        .args(common::attach_args(target.pid()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ctxleak");
    let mut stderr = Lines::new(ctxleak.stderr.take().expect("piped stderr"));
    std::thread::sleep(delay);
    target.exec();
    let status = wait_timeout(&mut ctxleak, SETTLE);
    if status.is_none() {
        let _ = ctxleak.kill();
        let _ = ctxleak.wait();
    }
    (stderr.rest(Duration::from_secs(5)), status)
}

#[test]
fn an_exec_while_attaching_is_said_as_such() {
    let pattern = |line: &str| {
        // Before ctxleak opened it, after it attached, or in between.
        let before = line.contains("is not a Go program (it has no .go.buildinfo section)");
        let after = line.contains(", which is not a Go program; detached");
        let during = line.contains("exec'd another program (")
            && line.contains("while ctxleak attached")
            && line.contains("attach again");
        before || after || during
    };
    let mut seen = Vec::new();
    for delay_ms in [0, 2, 5, 10, 20, 40, 80, 160, 400, 1500] {
        let (said, status) = attach_racing_an_exec(Duration::from_millis(delay_ms));
        let last = said.last().cloned().unwrap_or_default();
        assert!(
            status.is_some(),
            "{delay_ms} ms: attach did not end after its target exec'd sleep: {said:?}"
        );
        assert!(
            pattern(&last),
            "{delay_ms} ms: the exec is not what ctxleak's last line names: {said:?}"
        );
        // An error is status 1 and only then.
        assert_eq!(
            status.and_then(|status| status.code()),
            Some(if last.starts_with("ctxleak: error: ") {
                1
            } else {
                0
            }),
            "{delay_ms} ms: {said:?}"
        );
        seen.push(format!("{delay_ms} ms: {last}"));
    }
    eprintln!("{}", seen.join("\n"));
}
