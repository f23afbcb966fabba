//! ctxleak as Prometheus sees it (issue #7): Debian's Prometheus server, started on loopback
//! with the project's own deploy/prometheus/prometheus.yml and alerts.yml (only the scrape
//! target and the intervals changed), scrapes ctxleak watching three Go fixtures built with
//! different Go versions and one non-Go process. Through Prometheus's HTTP API: each fixture's
//! user goroutines equal its own `runtime.NumGoroutine()`, its target_info names its
//! executable and Go version, the non-Go process has no series; a killed fixture's series go
//! stale within seconds, a new fixture's appear within seconds; every PromQL expression of the
//! Grafana dashboard runs (and returns data where the fixtures must produce some), and every
//! alert rule evaluates without error against these real series.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{
    Ctxleak, Lines, Phases, fixture, go_versions, percent_encode, try_http_request,
};
use serde_json::Value;

/// Bounds how long a wrong answer is waited on; the measured times are printed. With 1 s
/// scrapes everything here normally settles in 1 to 3 s; CI machines are loaded.
const DEADLINE: Duration = Duration::from_secs(60);
/// Metrics that a `phases` fixture parked at its pre-attach checkpoint does not produce:
/// dashboard expressions using them must run, but may return nothing.
const MAY_BE_EMPTY: &[(&str, &str)] = &[
    (
        "ctxleak_leak_suspect_goroutines",
        "no group is a suspect: its goroutines do not keep growing",
    ),
    (
        "ctxleak_contexts_unreleased",
        "the fixture makes no contexts",
    ),
    ("ctxleak_contexts_orphaned", "the fixture makes no contexts"),
    (
        "ctxleak_goroutines_outliving_context",
        "the fixture makes no contexts",
    ),
];

/// `ctxleak daemon`, limited to the executables under `bin` so that Go processes of tests
/// running beside this one are not watched (the target count must be exactly the fixtures');
/// the non-Go process runs from `bin` too, so the daemon does look at it and must skip it.
fn start_daemon(bin: &Path) -> Ctxleak {
    let exe = format!("{}/**", bin.display());
    // Info: the `attached` and `detached` lines the test waits for.
    Ctxleak::daemon_logging("info", &["--exe", exe.as_str(), "--census-interval", "1s"])
}

/// deploy/prometheus/prometheus.yml with only what the test must change: the targets of the
/// ctxleak job, and the scrape and evaluation intervals (and the timeout) shortened to 1 s.
/// Each edit must find what it edits, so a reshaped shipped file fails here rather than being
/// tested half-edited.
fn test_config(shipped: &str, targets: &[String]) -> String {
    let mut out = Vec::new();
    let mut edits = std::collections::BTreeMap::<&str, usize>::new();
    let mut in_ctxleak_job = false;
    // Indentation of the `- targets:` line while its list is being replaced.
    let mut replacing: Option<usize> = None;
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(list_indent) = replacing {
            if trimmed.starts_with("- ") && indent > list_indent {
                continue; // a shipped target: dropped
            }
            replacing = None;
        }
        if trimmed.starts_with('#') {
            out.push(line.to_owned());
            continue;
        }
        if let Some(job) = trimmed.strip_prefix("- job_name:") {
            in_ctxleak_job = job.trim() == "ctxleak";
        }
        let key = trimmed.split(':').next().unwrap_or("");
        if ["scrape_interval", "evaluation_interval", "scrape_timeout"].contains(&key) {
            *edits.entry(key).or_default() += 1;
            out.push(format!("{}{key}: 1s", &line[..indent]));
            continue;
        }
        out.push(line.to_owned());
        if in_ctxleak_job && trimmed == "- targets:" {
            *edits.entry("targets").or_default() += 1;
            replacing = Some(indent);
            for target in targets {
                out.push(format!("{}  - {target}", &line[..indent]));
            }
        }
    }
    for key in [
        "scrape_interval",
        "evaluation_interval",
        "scrape_timeout",
        "targets",
    ] {
        assert!(
            edits.get(key).copied().unwrap_or(0) >= 1,
            "deploy/prometheus/prometheus.yml: found no `{key}` to edit (the test expects the ctxleak job with `static_configs: - targets:` and the intervals): update test_config; edits made: {edits:?}"
        );
    }
    assert_eq!(
        edits["targets"], 1,
        "deploy/prometheus/prometheus.yml: the ctxleak job must have exactly one static target list"
    );
    out.join("\n") + "\n"
}

/// Debian's Prometheus on a free loopback port, killed on drop.
struct Prometheus {
    // In cells: `poll` looks at them while its check borrows the rest.
    child: RefCell<Child>,
    address: String,
    stderr: RefCell<Lines>,
    targets: Vec<String>,
}

impl Prometheus {
    /// Runs Prometheus from `dir` on the project's config and alert rules (copied there).
    fn start(dir: &Path, targets: Vec<String>) -> Self {
        let deploy = common::workspace_root().join("deploy/prometheus");
        let shipped = std::fs::read_to_string(deploy.join("prometheus.yml"))
            .expect("read deploy/prometheus/prometheus.yml");
        // prometheus.yml loads alerts.yml from its own folder.
        std::fs::copy(deploy.join("alerts.yml"), dir.join("alerts.yml"))
            .expect("copy deploy/prometheus/alerts.yml");
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, test_config(&shipped, &targets)).expect("write prometheus.yml");
        let address = format!("127.0.0.1:{}", common::free_port());
        let mut child = Command::new(common::prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start prometheus");
        let stderr = RefCell::new(Lines::new(child.stderr.take().expect("piped stderr")));
        let prometheus = Self {
            child: RefCell::new(child),
            address,
            stderr,
            targets,
        };
        let took = prometheus.poll(
            "Prometheus ready (GET /-/ready)",
            || match try_http_request(&prometheus.address, "/-/ready") {
                Ok((200, _)) => Ok(()),
                Ok((status, body)) => {
                    Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))
                }
                Err(e) => Err(e),
            },
        );
        eprintln!("prometheus: ready on {} in {took:?}", prometheus.address);
        prometheus.wait_for_targets();
        prometheus
    }

    /// Until Prometheus scrapes exactly `targets` in job ctxleak, all of them up.
    fn wait_for_targets(&self) {
        let want: BTreeSet<String> = self.targets.iter().cloned().collect();
        let took = self.poll("every ctxleak target scraped and up", || {
            let data = self.api("/api/v1/targets?state=active")?;
            let active = data["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ours: Vec<&Value> = active
                .iter()
                .filter(|t| t["labels"]["job"] == "ctxleak")
                .collect();
            let seen: BTreeSet<String> = ours
                .iter()
                .filter_map(|t| t["labels"]["instance"].as_str().map(str::to_owned))
                .collect();
            let up = ours.iter().all(|t| t["health"] == "up");
            if seen == want && up {
                Ok(())
            } else {
                Err(format!("expected {want:?} up, Prometheus has {ours:?}"))
            }
        });
        eprintln!("prometheus: scraping {want:?}, all up, after {took:?}");
    }

    /// The `data` of a successful API answer, or what Prometheus said.
    fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = try_http_request(&self.address, path)?;
        let text = String::from_utf8_lossy(&body);
        let json: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("GET {path}: HTTP {status}, not JSON ({e}): {text}"))?;
        if status != 200 || json["status"] != "success" {
            return Err(format!("GET {path}: HTTP {status}: {text}"));
        }
        Ok(json["data"].clone())
    }

    /// The series of an instant query (a scalar result counts as one).
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(promql)))?;
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar" | "string") => Ok(vec![data["result"].clone()]),
            other => Err(format!(
                "{promql}: unexpected result type {other:?}: {data}"
            )),
        }
    }

    /// Retries `check` until it succeeds; fails the test with its last complaint (and
    /// Prometheus's log) after DEADLINE, or at once if Prometheus exited.
    fn poll<T>(&self, what: &str, mut check: impl FnMut() -> Result<T, String>) -> Duration {
        let start = Instant::now();
        loop {
            let last = match check() {
                Ok(_) => return start.elapsed(),
                Err(e) => e,
            };
            let exited = self.child.borrow_mut().try_wait();
            if let Ok(Some(status)) = exited {
                let log = self.stderr.borrow_mut().rest(Duration::from_secs(1));
                panic!("{what}: Prometheus exited ({status}): {last}\nits log: {log:#?}");
            }
            if start.elapsed() > DEADLINE {
                let log = self.stderr.borrow_mut().rest(Duration::from_millis(100));
                panic!(
                    "{what}: still not true after {DEADLINE:?}; last: {last}\nPrometheus log: {log:#?}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The value of a one-series answer.
fn single_value(series: &[Value]) -> Result<f64, String> {
    match series {
        [one] => one["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no value in {one}")),
        _ => Err(format!(
            "expected one series, got {}: {series:?}",
            series.len()
        )),
    }
}

/// Polls `promql` until it is one series equal to `want`.
fn expect_value(prometheus: &Prometheus, promql: &str, want: f64) -> Duration {
    let took = prometheus.poll(&format!("{promql} == {want}"), || {
        let got = single_value(&prometheus.query(promql)?)?;
        if got == want {
            Ok(())
        } else {
            Err(format!("Prometheus returned {got}"))
        }
    });
    eprintln!("ok: {promql} = {want} after {took:?}");
    took
}

/// A `phases` fixture stopped at one of its quiescent checkpoints, run from a copy of the
/// executable in `bin`.
struct Fixture {
    phases: Phases,
    exe: PathBuf,
    go_version: String,
    /// The runtime's own `NumGoroutine()` at the checkpoint.
    goroutines: u64,
}

impl Fixture {
    /// Runs the fixture up to the checkpoint `stop` (see fixtures/go/cmd/phases).
    fn start(bin: &Path, version: &str, stop: &str) -> Self {
        let exe = bin.join(format!("phases-go{version}"));
        std::fs::copy(fixture(version, "phases"), &exe).expect("copy the fixture");
        let mut phases = Phases::start(&exe);
        let goroutines = loop {
            let (name, goroutines) = phases.checkpoint();
            if name == stop {
                break goroutines;
            }
            assert_ne!(name, "final", "the fixture has no checkpoint {stop}");
            phases.advance();
        };
        Self {
            phases,
            exe: exe.canonicalize().expect("canonical fixture path"),
            go_version: format!("go{version}"),
            goroutines,
        }
    }

    fn pid(&self) -> u32 {
        self.phases.pid()
    }
}

/// A non-Go process (a copy of sleep), killed on drop.
struct NotGo(Child);

impl Drop for NotGo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon's /api/targets lists exactly `fixtures`, with their executables and Go versions
/// (the non-Go process is not among them).
fn check_api_targets(daemon: &Ctxleak, fixtures: &[Fixture]) {
    let body = common::http_get(&daemon.metrics_url, "/api/targets");
    let targets: Vec<Value> = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/api/targets is not a JSON array ({e}): {body}"));
    let got: BTreeSet<(u64, String, String)> = targets
        .iter()
        .map(|t| {
            (
                t["pid"].as_u64().unwrap_or(0),
                t["exe"].as_str().unwrap_or("").to_owned(),
                t["go_version"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(u64, String, String)> = fixtures
        .iter()
        .map(|f| {
            (
                u64::from(f.pid()),
                f.exe.display().to_string(),
                f.go_version.clone(),
            )
        })
        .collect();
    assert_eq!(got, want, "/api/targets: {body}");
    assert_eq!(targets.len(), fixtures.len(), "/api/targets: {body}");
}

/// Waits for the daemon's log line saying it `attached` to, or `detached` from, `pid`.
fn expect_log(daemon: &mut Ctxleak, event: &str, pid: u32) {
    let pid_word = format!("pid={pid}");
    let wanted = |line: &str| {
        let words: Vec<&str> = line
            .split_whitespace()
            .map(|word| word.trim_end_matches(':'))
            .collect();
        words.contains(&event) && words.contains(&pid_word.as_str())
    };
    if daemon.stderr.seen.iter().any(|line| wanted(line)) {
        return;
    }
    let deadline = Instant::now() + DEADLINE;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match daemon.stderr.next(left) {
            Some(line) if wanted(&line) => return,
            Some(_) => {}
            None => break,
        }
    }
    panic!(
        "the daemon logged no `{event}` line for PID {pid}; its log: {:#?}",
        daemon.stderr.seen
    );
}

/// What ctxleak must report for `fixture`, through Prometheus.
/// The daemon watches exactly `fixtures`: as many targets, as many executables (each fixture
/// runs its own copy, so one set of probes each), and `/api/targets` lists them.
fn expect_watching(prometheus: &Prometheus, daemon: &Ctxleak, fixtures: &[Fixture]) {
    let n = fixtures.len() as f64;
    expect_value(prometheus, r#"ctxleak_targets{job="ctxleak"}"#, n);
    expect_value(
        prometheus,
        r#"ctxleak_attached_executables{job="ctxleak"}"#,
        n,
    );
    check_api_targets(daemon, fixtures);
}

fn check_fixture(prometheus: &Prometheus, fixture: &Fixture) {
    let pid = fixture.pid();
    let want = fixture.goroutines as f64;
    expect_value(
        prometheus,
        &format!(r#"ctxleak_goroutines{{job="ctxleak",pid="{pid}",kind="user"}}"#),
        want,
    );
    // The census sees the same goroutines, each in exactly one state.
    expect_value(
        prometheus,
        &format!(r#"sum(ctxleak_goroutines_by_state{{job="ctxleak",pid="{pid}"}})"#),
        want,
    );
    let info = format!(r#"ctxleak_target_info{{job="ctxleak",pid="{pid}"}}"#);
    let series = prometheus.query(&info).expect("query target_info");
    let [one] = series.as_slice() else {
        panic!("{info}: expected one series, Prometheus returned {series:?}");
    };
    let labels = &one["metric"];
    assert_eq!(
        labels["exe"].as_str(),
        fixture.exe.to_str(),
        "{info}: exe label; Prometheus returned {one}"
    );
    assert_eq!(
        labels["go_version"].as_str(),
        Some(fixture.go_version.as_str()),
        "{info}: go_version label; Prometheus returned {one}"
    );
    assert_eq!(
        single_value(&series),
        Ok(1.0),
        "{info}: target_info is always 1"
    );
}

/// A Grafana query as PromQL, as deploy-check does: interval variables become `5m`; the
/// dashboard's own variables become `values` (a regex, as Grafana formats multi-values).
fn grafana_to_promql(expr: &str, values: &[(&str, String)]) -> String {
    let mut out = expr.to_owned();
    for interval in ["$__rate_interval", "$__interval", "$__range"] {
        out = out.replace(interval, "5m");
    }
    // Longest names first, so `$pid` never eats the start of a longer name.
    let mut values = values.to_vec();
    values.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (name, value) in &values {
        for form in [
            format!("${{{name}}}"),
            format!("[[{name}]]"),
            format!("${name}"),
        ] {
            out = out.replace(&form, value);
        }
    }
    assert!(
        !out.contains('$') && !out.contains("[["),
        "dashboard query {expr:?} uses a variable the test does not know: {out}"
    );
    out
}

/// Every PromQL expression of the dashboard (variables' selectors and panels' queries), with
/// a name for messages.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = common::workspace_root().join("deploy/grafana/ctxleak-dashboard.json");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).expect("read deploy/grafana/ctxleak-dashboard.json"),
    )
    .expect("the dashboard is JSON");
    let queries: Vec<(String, String)> = ctxleak_daemon::dashboard::dashboard_queries(&dashboard)
        .unwrap_or_else(|error| panic!("deploy/grafana/ctxleak-dashboard.json: {error}"))
        .into_iter()
        .map(|query| (query.what, query.expr))
        .collect();
    assert!(
        queries.len() > 10,
        "found only {} queries in the dashboard",
        queries.len()
    );
    queries
}

/// Runs every dashboard expression: each must succeed, and return data unless it uses a
/// metric the fixtures cannot produce (MAY_BE_EMPTY).
fn check_dashboard(prometheus: &Prometheus, values: &[(&str, String)]) {
    let mut with_data = 0;
    let mut empty = Vec::new();
    for (what, expr) in dashboard_queries() {
        let promql = grafana_to_promql(&expr, values);
        let optional = MAY_BE_EMPTY
            .iter()
            .find(|(metric, _)| promql.contains(metric));
        if let Some((metric, why)) = optional {
            // Runs, which proves it parses and evaluates; no data is expected.
            match prometheus.query(&promql) {
                Ok(series) if series.is_empty() => {
                    empty.push(format!("{what}: no data ({metric}: {why})"));
                }
                Ok(series) => {
                    with_data += 1;
                    eprintln!("dashboard: {what}: {} series", series.len());
                }
                Err(e) => panic!("dashboard {what}: {promql}\nPrometheus: {e}"),
            }
            continue;
        }
        let mut count = 0;
        let took = prometheus.poll(&format!("dashboard {what} returns data: {promql}"), || {
            let series = prometheus.query(&promql)?;
            count = series.len();
            if series.is_empty() {
                Err("Prometheus returned no series".to_owned())
            } else {
                Ok(())
            }
        });
        with_data += 1;
        eprintln!("dashboard: {what}: {count} series (after {took:?})");
    }
    for line in &empty {
        eprintln!("dashboard: {line}");
    }
    eprintln!(
        "dashboard: {with_data} expressions returned data, {} ran with none (allowed)",
        empty.len()
    );
}

/// Every alert rule of alerts.yml is loaded and has been evaluated with health "ok".
fn check_rules(prometheus: &Prometheus) {
    let shipped =
        std::fs::read_to_string(common::workspace_root().join("deploy/prometheus/alerts.yml"))
            .expect("read deploy/prometheus/alerts.yml");
    let expected = shipped
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(expected > 0, "alerts.yml has no `- alert:` rules");
    let mut names = Vec::new();
    let took = prometheus.poll("every alert rule evaluated, health ok", || {
        let data = prometheus.api("/api/v1/rules?type=alert")?;
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if rules.len() != expected {
            return Err(format!(
                "alerts.yml has {expected} alerts, Prometheus loaded {}: {rules:?}",
                rules.len()
            ));
        }
        let bad: Vec<String> = rules
            .iter()
            .filter(|r| {
                r["health"] != "ok"
                    || r["lastEvaluation"]
                        .as_str()
                        .is_none_or(|t| t.starts_with("0001-"))
            })
            .map(|r| {
                format!(
                    "{}: health {}, lastError {}, lastEvaluation {}",
                    r["name"], r["health"], r["lastError"], r["lastEvaluation"]
                )
            })
            .collect();
        if !bad.is_empty() {
            return Err(format!("not evaluated cleanly: {bad:#?}"));
        }
        names = rules
            .iter()
            .map(|r| format!("{}={}", r["name"], r["state"]))
            .collect();
        Ok(())
    });
    eprintln!(
        "alerts: all {expected} rules evaluated with health ok after {took:?}: {}",
        names.join(", ")
    );
}

#[test]
fn prometheus_scrapes_ctxleak_and_the_dashboard_and_alerts_work() {
    // Before starting anything: without the server there is nothing to test.
    common::prometheus_binary();
    let versions = go_versions();
    assert!(versions.len() >= 4, "expected at least four Go versions");
    // Three versions at once (oldest, middle, newest), a fourth started later. Each stops at
    // a different checkpoint, so each has its own goroutine count (301, 124, 1 with today's
    // fixture) and a series reported under the wrong PID would show.
    let initial = [
        (versions[0].clone(), "pre-attach"),
        (versions[versions.len() / 2].clone(), "final"),
        (versions[versions.len() - 1].clone(), "churn-20000"),
    ];
    let later = versions[1].clone();

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("prometheus-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("create the test's folder");

    let mut fixtures: Vec<Fixture> = initial
        .iter()
        .map(|(version, stop)| Fixture::start(&bin, version, stop))
        .collect();
    let sleep = bin.join("sleep");
    std::fs::copy("/bin/sleep", &sleep).expect("copy /bin/sleep");
    let not_go = NotGo(
        Command::new(&sleep)
            .arg("600")
            .spawn()
            .expect("start sleep"),
    );
    let not_go_pid = not_go.0.id();
    let pids: Vec<u32> = fixtures.iter().map(Fixture::pid).collect();
    eprintln!(
        "fixtures: {}; not Go: PID {not_go_pid}",
        fixtures
            .iter()
            .map(|f| format!(
                "PID {} {} ({} goroutines)",
                f.pid(),
                f.go_version,
                f.goroutines
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut daemon = start_daemon(&bin);
    let prometheus = Prometheus::start(&dir, vec![daemon.metrics_url.clone()]);
    // Since when the non-Go process could have had series.
    let started = Instant::now();

    for fixture in &fixtures {
        check_fixture(&prometheus, fixture);
    }
    expect_watching(&prometheus, &daemon, &fixtures);
    for fixture in &fixtures {
        expect_log(&mut daemon, "attached", fixture.pid());
    }

    // Run through the dashboard and the rules while all three are watched.
    let pid_regex = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("|");
    let values = [
        ("instance", daemon.metrics_url.clone()),
        ("exe", ".*".to_owned()),
        ("pid", pid_regex),
    ];
    check_dashboard(&prometheus, &values);
    check_rules(&prometheus);

    // The non-Go process, which the daemon looked at (it runs from `bin`), never had a series,
    // whatever the metric, since Prometheus started.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .saturating_sub(started.elapsed() + Duration::from_secs(60))
        .as_secs();
    let matcher = percent_encode(&format!(r#"{{pid="{not_go_pid}"}}"#));
    let series = prometheus
        .api(&format!("/api/v1/series?match[]={matcher}&start={start}"))
        .expect("series API");
    assert_eq!(
        series.as_array().map(Vec::len),
        Some(0),
        "the non-Go process PID {not_go_pid} has series: {series}"
    );
    eprintln!("ok: no series for the non-Go PID {not_go_pid}");

    // Kill one fixture: the daemon removes all its series, so they vanish from instant queries
    // at the next scrape (Prometheus marks a series that disappears from a target stale).
    let mut killed = fixtures.remove(0);
    let killed_pid = killed.pid();
    let killed_at = Instant::now();
    killed.phases.child.kill().expect("kill the fixture");
    killed.phases.child.wait().expect("reap the fixture");
    let gone = format!(r#"{{job="ctxleak",pid="{killed_pid}"}}"#);
    let took = prometheus.poll(&format!("{gone} gone after the kill"), || {
        let series = prometheus.query(&gone)?;
        if series.is_empty() {
            Ok(())
        } else {
            Err(format!("Prometheus still returns {series:?}"))
        }
    });
    eprintln!(
        "ok: PID {killed_pid} killed: its series gone from queries after {:?} ({took:?} of polling)",
        killed_at.elapsed()
    );
    expect_log(&mut daemon, "detached", killed_pid);
    // Its executable was used by no one else: its probes are gone too.
    expect_watching(&prometheus, &daemon, &fixtures);

    // A fourth fixture, another Go version: the daemon finds it at its exec, and its series
    // appear in Prometheus within seconds.
    let spawned = Instant::now();
    let fourth = Fixture::start(&bin, &later, "pre-attach");
    check_fixture(&prometheus, &fourth);
    eprintln!(
        "ok: PID {} ({}) started: its series in Prometheus {:?} after its exec",
        fourth.pid(),
        fourth.go_version,
        spawned.elapsed()
    );
    expect_log(&mut daemon, "attached", fourth.pid());
    fixtures.push(fourth);
    expect_watching(&prometheus, &daemon, &fixtures);
    for fixture in &fixtures {
        check_fixture(&prometheus, fixture);
    }
    assert!(
        daemon.child.try_wait().is_ok_and(|status| status.is_none()),
        "the daemon exited: {:?}",
        daemon.stderr.rest(Duration::from_secs(1))
    );

    drop(prometheus);
    drop(daemon);
    drop(fixtures);
    drop(not_go);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The config the test runs is the shipped one but for the targets and the intervals.
#[test]
fn the_test_config_differs_from_the_shipped_one_only_in_targets_and_intervals() {
    let shipped =
        std::fs::read_to_string(common::workspace_root().join("deploy/prometheus/prometheus.yml"))
            .expect("read deploy/prometheus/prometheus.yml");
    let targets = ["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()];
    let edited = test_config(&shipped, &targets);
    let edited_keys = [
        "scrape_interval:",
        "evaluation_interval:",
        "scrape_timeout:",
    ];
    let rest = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| {
                let line = line.trim_start();
                !edited_keys.iter().any(|k| line.starts_with(k))
                    && !line.starts_with("- 127.0.0.1:")
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(rest(&shipped), rest(&edited));
    for line in edited.lines().map(str::trim_start) {
        if edited_keys.iter().any(|k| line.starts_with(k)) {
            assert!(line.ends_with(": 1s"), "not shortened: {line}");
        }
    }
    let listed: Vec<&str> = edited
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("- 127.0.0.1:"))
        .collect();
    assert_eq!(listed, ["1", "2"], "the targets in:\n{edited}");
}
