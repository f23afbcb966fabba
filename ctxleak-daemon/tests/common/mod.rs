//! Shared by the integration tests: Go fixtures built by `cargo xtask fixtures`, the
//! `ctxleak` binary under test, and scraping its metrics.
//!
//! These tests attach real uprobes to real Go processes: they need root (CI runs as root).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Where `cargo xtask fixtures` put the Go programs: `<dir>/go<version>/<name>`.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CTXLEAK_FIXTURES")
            .expect("CTXLEAK_FIXTURES is not set: run the tests with `cargo xtask test`, which builds the Go fixtures"),
    )
}

/// Every Go version the fixtures were built with (all of them must be present).
pub fn go_versions() -> Vec<String> {
    let list = std::env::var("CTXLEAK_GO_VERSIONS")
        .expect("CTXLEAK_GO_VERSIONS is not set: run the tests with `cargo xtask test`");
    list.split(',')
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

pub fn fixture(version: &str, name: &str) -> PathBuf {
    let path = fixtures_dir().join(format!("go{version}")).join(name);
    assert!(
        path.is_file(),
        "missing fixture {}: run `cargo xtask fixtures`",
        path.display()
    );
    path
}

pub fn newest_go() -> String {
    go_versions()
        .last()
        .cloned()
        .expect("CTXLEAK_GO_VERSIONS is empty")
}

/// Lines a child wrote, readable with a timeout.
pub struct Lines {
    rx: Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    pub fn new(stream: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line, or None at EOF or after `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<String> {
        match self.rx.recv_timeout(timeout) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Waits for a line containing `needle`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let line = self.next(left)?;
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    }

    /// Everything still to come until EOF (or `timeout`).
    pub fn rest(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(line) => lines.push(line),
                None => break,
            }
        }
        lines
    }
}

/// The `phases` fixture: prints `checkpoint <name> goroutines <n>` and waits for a line on
/// stdin before each next phase.
pub struct Phases {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines,
}

impl Phases {
    pub fn start(binary: &std::path::Path) -> Self {
        Self::spawn(Command::new(binary))
    }

    /// Starts the fixture through `command` (which must end up exec'ing it, keeping its PID).
    pub fn spawn(mut command: Command) -> Self {
        let binary = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let stdin = child.stdin.take();
        let stdout = Lines::new(child.stdout.take().expect("piped stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next checkpoint's name and the runtime's own `NumGoroutine()` there.
    pub fn checkpoint(&mut self) -> (String, u64) {
        let line = self
            .stdout
            .next(Duration::from_secs(60))
            .expect("the fixture printed no checkpoint");
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["checkpoint", name, "goroutines", n] => (
                name.to_string(),
                n.parse()
                    .unwrap_or_else(|_| panic!("bad count in {line:?}")),
            ),
            _ => panic!("unexpected fixture output {line:?}"),
        }
    }

    /// Lets the fixture go on to its next phase.
    pub fn advance(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin
            .write_all(b"\n")
            .and_then(|()| stdin.flush())
            .expect("the fixture's stdin is closed");
    }

    /// Closes stdin: the fixture exits at its next checkpoint (and stays a zombie until
    /// waited for).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Closes stdin and waits for the fixture to exit.
    pub fn finish(&mut self) -> ExitStatus {
        self.close_stdin();
        wait_timeout(&mut self.child, Duration::from_secs(30)).expect("the fixture did not exit")
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `ctxleak attach` on `pid`, quiet, with metrics on a free loopback port.
pub fn attach_args(pid: u32) -> Vec<String> {
    [
        "attach",
        "--quiet",
        "--web.listen-address",
        "127.0.0.1:0",
        "--pid",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([pid.to_string()])
    .collect()
}

pub fn ctxleak() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ctxleak"))
}

/// Starts `ctxleak report --pid PID ARGS` (stdout and stderr piped) and waits until it is
/// attached: the child, and its stderr's lines so far.
pub fn start_report(pid: u32, args: &[&str]) -> (Child, Lines) {
    let mut child = ctxleak()
        .args(["report", "--pid", &pid.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start ctxleak report");
    let mut stderr = Lines::new(child.stderr.take().expect("piped stderr"));
    assert!(
        stderr
            .wait_for("ctxleak: attached to PID", Duration::from_secs(60))
            .is_some(),
        "ctxleak report did not attach: {:?}",
        stderr.seen
    );
    (child, stderr)
}

/// A running `ctxleak attach`.
pub struct Ctxleak {
    pub child: Child,
    pub stderr: Lines,
    pub metrics_url: String,
}

impl Ctxleak {
    /// Attaches to `pid` with metrics on a free loopback port and waits until it is attached.
    pub fn attach(pid: u32) -> Self {
        Self::attach_with(pid, &[])
    }

    pub fn attach_with(pid: u32, extra: &[&str]) -> Self {
        let args: Vec<String> = attach_args(pid)
            .into_iter()
            .chain(extra.iter().map(|arg| (*arg).to_owned()))
            .collect();
        Self::start(&args, &format!("ctxleak did not attach to PID {pid}"))
    }

    /// Runs `ctxleak ARGS` and waits for its `metrics at http://ADDR/metrics` line.
    fn start(args: &[String], failure: &str) -> Self {
        let mut command = ctxleak();
        command.args(args);
        Self::from_command(command, failure)
    }

    /// Runs `command` (ctxleak, or a wrapper that execs it, such as setpriv) with stderr
    /// piped and waits for its `metrics at http://ADDR/metrics` line; panics with `failure`
    /// and what it printed otherwise.
    pub fn from_command(mut command: Command, failure: &str) -> Self {
        let shown = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let mut stderr = Lines::new(child.stderr.take().expect("piped stderr"));
        let Some(line) = stderr.wait_for("metrics at http://", Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!("{failure} ({shown}): {:?}", stderr.seen);
        };
        let metrics_url = line
            .split("metrics at http://")
            .nth(1)
            .map(|rest| rest.trim().trim_end_matches("/metrics").to_owned())
            .expect("address in the ready line");
        Self {
            child,
            stderr,
            metrics_url,
        }
    }

    /// ctxleak's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        vm_rss_kib(self.child.id()).expect("ctxleak is not running")
    }

    pub fn scrape(&self) -> String {
        http_get(&self.metrics_url, "/metrics")
    }

    /// Sends a signal to ctxleak.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a child's PID.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Ctxleak {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's Prometheus server, which `cargo xtask test` extracts into target/tools/prometheus.
pub fn prometheus_binary() -> PathBuf {
    let path = PathBuf::from(std::env::var_os("CTXLEAK_PROMETHEUS").expect(
        "CTXLEAK_PROMETHEUS is not set: run the tests with `cargo xtask test`, which extracts the Prometheus server from Debian's package",
    ));
    assert!(
        path.is_file(),
        "CTXLEAK_PROMETHEUS names {}, which is missing: run the tests with `cargo xtask test`",
        path.display()
    );
    path
}

/// A process's resident memory (VmRSS in /proc/PID/status), in KiB.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The number of samples (series) in a /metrics page: its lines that are not comments.
pub fn series_count(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .count()
}

/// A free TCP port on loopback (free when this returns; nothing else here binds ports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("cannot bind a loopback port")
        .port()
}

/// `text` percent-encoded for a URL's query string (RFC 3986 unreserved characters kept).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The workspace root (the tests run from the crate's folder).
pub fn workspace_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A `go` command of one installed toolchain (`cargo xtask setup` puts them under target/),
/// offline and with its caches in the workspace, as `cargo xtask` runs go.
pub fn go_command(version: &str) -> Command {
    let tools = workspace_root().join("target/tools");
    let binary = tools.join("go").join(version).join("go/bin/go");
    assert!(
        binary.is_file(),
        "Go {version} is not installed at {}: run `cargo xtask setup`",
        binary.display()
    );
    let mut command = Command::new(binary);
    command
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0")
        .env("GOENV", "off")
        .env("GOCACHE", tools.join("gocache"))
        .env("GOPATH", tools.join("gopath"))
        // Each toolchain finds its own GOROOT next to its binary.
        .env_remove("GOROOT");
    command
}

/// Runs `check` on the oldest and the newest Go version, reports each outcome and fails the
/// test with every failure.
pub fn on_oldest_and_newest(check: impl Fn(&str) -> Result<String, String>) {
    let versions = go_versions();
    let outcomes: Vec<(String, Result<String, String>)> = [versions.first(), versions.last()]
        .into_iter()
        .flatten()
        .map(|version| (version.clone(), check(version)))
        .collect();
    assert_outcomes(outcomes);
}

/// A check of one Go version: a summary, or what went wrong.
pub type Check = fn(&str) -> Result<String, String>;

/// Runs every check on the oldest and the newest Go version all at once, each in its own
/// thread (they mostly wait for watches to end), reports each outcome and fails the test with
/// every failure.
pub fn all_at_once_on_oldest_and_newest(checks: &[Check]) {
    let versions = go_versions();
    let versions: Vec<&String> = [versions.first(), versions.last()]
        .into_iter()
        .flatten()
        .collect();
    let outcomes: Vec<(String, Result<String, String>)> = std::thread::scope(|scope| {
        let runs: Vec<_> = versions
            .iter()
            .flat_map(|&version| {
                checks
                    .iter()
                    .map(move |&check| (version, scope.spawn(move || check(version))))
            })
            .collect();
        runs.into_iter()
            .map(|(version, run)| {
                let outcome = run
                    .join()
                    .unwrap_or_else(|_| Err("the check panicked".to_owned()));
                (version.clone(), outcome)
            })
            .collect()
    });
    assert_outcomes(outcomes);
}

/// Prints each version's summary and fails with every failure.
fn assert_outcomes(outcomes: Vec<(String, Result<String, String>)>) {
    let mut failures = Vec::new();
    for (version, outcome) in outcomes {
        match outcome {
            Ok(summary) => eprintln!("go{version}: {summary}"),
            Err(error) => failures.push(format!("go{version}: {error}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The array at `path` in a JSON report (empty when absent).
pub fn json_list<'a>(json: &'a Value, path: &[&str]) -> &'a [Value] {
    path.iter()
        .fold(json, |value, key| &value[*key])
        .as_array()
        .map_or(&[], Vec::as_slice)
}

/// Runs a `ctxleak report --json` (from [`start_report`]) to its end: its exit status and
/// JSON.
pub fn finish_json_report(child: Child) -> Result<(Option<i32>, Value), String> {
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let json = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "no JSON report ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    Ok((output.status.code(), json))
}

/// `GET path` over HTTP/1.0: the status code and the body.
pub fn http_request(address: &str, path: &str) -> (u16, Vec<u8>) {
    try_http_request(address, path).unwrap_or_else(|e| panic!("{e}"))
}

/// `GET path` over HTTP/1.0, or why it failed (nothing listening yet, no HTTP answer).
pub fn try_http_request(address: &str, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut stream =
        TcpStream::connect(address).map_err(|e| format!("cannot connect to {address}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| format!("cannot set a timeout: {e}"))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")
        .map_err(|e| format!("GET {path} to {address}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("GET {path} from {address}: {e}"))?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("GET {path} from {address}: not an HTTP response"))?;
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok((status, response[end + 4..].to_vec()))
}

/// The body of a `GET path` that must succeed, as bytes (for binary responses).
pub fn http_get_bytes(address: &str, path: &str) -> Vec<u8> {
    let (status, body) = http_request(address, path);
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

/// The status code and body of `GET path`.
pub fn http_get_status(address: &str, path: &str) -> (u16, String) {
    let (status, body) = http_request(address, path);
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The body of a `GET path` that must succeed.
pub fn http_get(address: &str, path: &str) -> String {
    String::from_utf8_lossy(&http_get_bytes(address, path)).into_owned()
}

/// The value of the sample whose name and labels are exactly `series`, e.g.
/// `ctxleak_goroutines{pid="42",kind="user"}`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Polls until `series` equals `want`; returns how long that took, or the last value seen.
pub fn wait_for_sample(
    ctxleak: &Ctxleak,
    series: &str,
    want: f64,
    timeout: Duration,
) -> Result<Duration, Option<f64>> {
    let start = Instant::now();
    loop {
        let value = sample(&ctxleak.scrape(), series);
        if value == Some(want) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(value);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fixture driven through stdin that prints what it knows as `fact <key> <value>` lines and
/// stops at `checkpoint <name> ...` lines (the `contexts` and `ctxhttp` programs).
pub struct Driven {
    pub child: Child,
    stdin: ChildStdin,
    stdout: Lines,
    /// Every fact printed so far; a later one replaces an earlier one with the same key.
    pub facts: std::collections::HashMap<String, String>,
}

impl Driven {
    pub fn start(path: &std::path::Path) -> Self {
        Self::start_with(path, &[])
    }

    /// Starts the fixture at `path` with these arguments.
    pub fn start_with(path: &std::path::Path, args: &[&str]) -> Self {
        let mut child = Command::new(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = Lines::new(child.stdout.take().expect("piped stdout"));
        Self {
            child,
            stdin,
            stdout,
            facts: std::collections::HashMap::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of the fixture's that contains `needle`, within `timeout`; the lines
    /// seen so far if none came.
    pub fn line_with(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.stdout
            .wait_for(needle, timeout)
            .ok_or_else(|| format!("no line with {needle:?}: {:?}", self.stdout.seen))
    }

    /// Writes one line to the fixture (an empty one lets it go on to its next phase).
    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .expect("the fixture's stdin is closed");
    }

    /// Reads facts up to the next checkpoint, which must be `name`.
    pub fn checkpoint(&mut self, name: &str) -> Result<(), String> {
        loop {
            let line = self
                .stdout
                .next(Duration::from_secs(60))
                .ok_or_else(|| format!("no checkpoint {name}: {:?}", self.stdout.seen))?;
            let fields: Vec<&str> = line.splitn(3, ' ').collect();
            match fields.as_slice() {
                ["fact", key, value] => {
                    self.facts.insert((*key).to_owned(), (*value).to_owned());
                }
                ["checkpoint", got, rest] if *got == name => {
                    // "goroutines N": runtime.NumGoroutine() there, as the fact "goroutines".
                    if let Some(count) = rest.strip_prefix("goroutines ") {
                        self.facts
                            .insert("goroutines".to_owned(), count.trim().to_owned());
                    }
                    return Ok(());
                }
                ["checkpoint", got, ..] if *got == name => return Ok(()),
                _ => return Err(format!("unexpected line {line:?} before checkpoint {name}")),
            }
        }
    }

    pub fn fact(&self, key: &str) -> Result<&str, String> {
        self.facts
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("the fixture printed no fact {key}"))
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ctxleak {
    /// `ctxleak daemon` with metrics on a free loopback port, once its initial scan of /proc
    /// is done (it prints the same `metrics at http://ADDR/metrics` line as `attach`), logging
    /// what `filter` selects (a CTXLEAK_LOG value, e.g. `ctxleak_daemon::daemon=debug,info`)
    /// whatever the environment says, for tests that read its log.
    pub fn daemon_logging(filter: &str, extra: &[&str]) -> Self {
        let mut command = ctxleak();
        command
            .args(["daemon", "--web.listen-address", "127.0.0.1:0"])
            .args(extra)
            .env("CTXLEAK_LOG", filter);
        Self::from_command(command, "ctxleak daemon did not finish its initial scan")
    }
}

// What the context tests read from `/api/leaks`.

/// Lets the fixture go on to its checkpoint `name`; returns when it got there.
pub fn advance_to(fx: &mut Driven, name: &str) -> Result<u64, String> {
    fx.send("");
    fx.checkpoint(name)?;
    Ok(now_ms())
}

/// Milliseconds since the Unix epoch: what `/api/*` stamps its answers with.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `function:line` of a site in the report.
pub fn site(value: &Value) -> String {
    format!(
        "{}:{}",
        value["function"].as_str().unwrap_or("?"),
        value["line"]
    )
}

/// The unreleased entry at `at`, if any.
pub fn unreleased_at<'r>(report: &'r Value, at: &str) -> Option<&'r Value> {
    report["unreleased"]
        .as_array()?
        .iter()
        .find(|u| site(&u["site"]) == at)
}

pub fn count(entry: Option<&Value>, field: &str) -> u64 {
    entry.and_then(|e| e[field].as_u64()).unwrap_or(0)
}

/// Polls /api/leaks until a report taken at least `settle_ms` after `since_ms` passes
/// `check`; returns the last error otherwise.
pub fn report_after(
    ctxleak: &Ctxleak,
    since_ms: u64,
    settle_ms: u64,
    check: impl Fn(&Value) -> Result<(), String>,
) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::from("no report");
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let (status, body) = http_get_status(&ctxleak.metrics_url, "/api/leaks");
        if status != 200 {
            continue;
        }
        let report: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if report["taken_at_unix_ms"].as_u64().unwrap_or(0) < since_ms + settle_ms {
            continue;
        }
        match check(&report) {
            Ok(()) => return Ok(report),
            Err(error) => last = format!("{error}\nreport: {body}"),
        }
    }
    Err(last)
}
