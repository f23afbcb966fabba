//! ctxleak's goroutine census against the runtime's own goroutine profile: the `parked`
//! fixture blocks goroutines at known lines in every common way (channels, select, select{},
//! Mutex, WaitGroup, Cond, sleep, IO wait, a system call) and writes
//! `pprof.Lookup("goroutine").WriteTo(w, 1)`; ctxleak's stacks, grouped the same way, must
//! have the same frames and counts, for every Go version, with symbols and stripped.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{
    Ctxleak, Lines, fixture, go_command, go_versions, http_get_bytes, http_get_status,
};

/// A stack as pprof's debug=1 output shows it: (function, file:line), innermost first.
type Stack = Vec<(String, String)>;

/// Parses `goroutine profile: total N` followed by records `count @ pcs` and `#\tpc\tfunc+off\tfile:line` lines.
fn parse_debug1(text: &str) -> (u64, BTreeMap<Stack, u64>) {
    let mut total = 0;
    let mut stacks = BTreeMap::new();
    let mut current: Option<(u64, Stack)> = None;
    for line in text.lines().chain(std::iter::once("")) {
        if let Some(rest) = line.strip_prefix("goroutine profile: total ") {
            total = rest.trim().parse().expect("total");
        } else if let Some((count, _)) = line.split_once(" @ ") {
            current = Some((count.trim().parse().expect("count"), Vec::new()));
        } else if let Some(frame) = line.strip_prefix('#') {
            let fields: Vec<&str> = frame.split('\t').filter(|f| !f.is_empty()).collect();
            if let (Some((_, stack)), [_, function, location]) =
                (current.as_mut(), fields.as_slice())
            {
                let function = function
                    .rsplit_once("+0x")
                    .map_or(*function, |(name, _)| name);
                stack.push((function.to_owned(), location.to_string()));
            }
        } else if line.trim().is_empty()
            && let Some((count, stack)) = current.take()
        {
            *stacks.entry(stack).or_insert(0) += count;
        }
    }
    (total, stacks)
}

/// ctxleak's stacks, shown the way pprof shows them: wrappers left out (as
/// runtime.CallersFrames does), leading runtime frames and runtime.goexit hidden.
fn as_pprof_shows(goroutine: &serde_json::Value) -> Stack {
    let mut shown = Vec::new();
    let mut show = false;
    for frame in goroutine["stack"].as_array().expect("stack") {
        let function = frame["function"].as_str().unwrap_or_default();
        if frame["wrapper"].as_bool().unwrap_or(false) || function == "runtime.goexit" {
            continue;
        }
        if !show && (function.starts_with("runtime.") || function.starts_with("internal/runtime/"))
        {
            continue;
        }
        show = true;
        let location = format!(
            "{}:{}",
            frame["file"].as_str().unwrap_or_default(),
            frame["line"]
        );
        shown.push((function.to_owned(), location));
    }
    shown
}

fn check(version: &str, build: &str) -> Result<String, String> {
    let profile = std::env::temp_dir().join(format!(
        "ctxleak-census-{version}-{build}-{}.txt",
        std::process::id()
    ));
    let mut child = Command::new(fixture(version, build))
        .arg(&profile)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the fixture");
    let mut stdout = Lines::new(child.stdout.take().expect("stdout"));
    let ready = stdout.wait_for("ready", Duration::from_secs(60));
    let result = (|| {
        ready.ok_or("the fixture never got ready")?;
        let pid = child.id();
        let ctxleak = Ctxleak::attach_with(pid, &["--census-interval", "1s"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let body = loop {
            let (status, body) = http_get_status(&ctxleak.metrics_url, "/api/goroutines");
            if status == 200 {
                break body;
            }
            if Instant::now() > deadline {
                return Err(format!("no census after 20 s: {status} {body}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let census: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&profile).map_err(|e| e.to_string())?;
        let (total, mut want) = parse_debug1(&text);
        // The goroutine that wrote the profile was running then; it is elsewhere now.
        want.retain(|stack, _| {
            !stack
                .iter()
                .any(|(function, _)| function.starts_with("runtime/pprof."))
        });
        let mut got: BTreeMap<Stack, u64> = BTreeMap::new();
        let mut user = 0;
        for goroutine in census["goroutines"].as_array().ok_or("no goroutines")? {
            if goroutine["system"].as_bool() == Some(true) {
                continue;
            }
            user += 1;
            if goroutine["goid"].as_u64() == Some(1) {
                continue; // The main goroutine: the one that wrote the profile.
            }
            *got.entry(as_pprof_shows(goroutine)).or_insert(0) += 1;
        }
        if user != total {
            return Err(format!(
                "ctxleak counts {user} user goroutines, the profile says total {total}"
            ));
        }
        if got != want {
            let only = |a: &BTreeMap<Stack, u64>, b: &BTreeMap<Stack, u64>| {
                a.iter()
                    .filter(|(k, v)| b.get(*k) != Some(*v))
                    .map(|(k, v)| format!("{v} x {k:?}"))
                    .collect::<Vec<_>>()
            };
            return Err(format!(
                "stacks differ\n  ctxleak only: {:#?}\n  runtime only: {:#?}",
                only(&got, &want),
                only(&want, &got)
            ));
        }
        check_pprof(version, &ctxleak, &want)?;
        Ok(format!(
            "{} stacks, {} goroutines; go tool pprof agrees",
            want.len(),
            want.values().sum::<u64>()
        ))
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&profile);
    result
}

/// `go tool pprof -traces` on ctxleak's /debug/pprof/goroutine shows the runtime's stacks:
/// the same functions, innermost first (pprof's own display rules applied to both), with the
/// same counts.
fn check_pprof(
    version: &str,
    ctxleak: &Ctxleak,
    want: &BTreeMap<Stack, u64>,
) -> Result<(), String> {
    let profile = http_get_bytes(&ctxleak.metrics_url, "/debug/pprof/goroutine");
    let path = std::env::temp_dir().join(format!(
        "ctxleak-profile-{version}-{}.pb.gz",
        std::process::id()
    ));
    std::fs::write(&path, &profile).map_err(|e| e.to_string())?;
    let output = go_command(version)
        .args(["tool", "pprof", "-traces"])
        .arg(&path)
        .output()
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&path);
    if !output.status.success() {
        return Err(format!(
            "go tool pprof failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut traces: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for block in String::from_utf8_lossy(&output.stdout).split("-----------+-") {
        let mut count: Option<u64> = None;
        let mut functions = Vec::new();
        // "         5   runtime.gopark", then "             main.selectTwo (inline)", ...
        for line in block.lines() {
            let mut fields = line.split_whitespace();
            let (Some(first), second) = (fields.next(), fields.next()) else {
                continue;
            };
            let function = match (count, first.parse::<u64>()) {
                (None, Ok(n)) => {
                    count = Some(n);
                    second
                }
                (Some(_), _) if !first.starts_with('-') => Some(first),
                _ => None,
            };
            functions.extend(function.map(str::to_owned));
        }
        let Some(count) = count else { continue };
        let shown: Vec<String> = functions
            .into_iter()
            .skip_while(|f| f.starts_with("runtime.") || f.starts_with("internal/runtime/"))
            .collect();
        if shown.iter().any(|f| f == "main.main") {
            continue; // The main goroutine: the one that wrote the runtime's profile.
        }
        *traces.entry(shown).or_insert(0) += count;
    }
    let mut expected: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for (stack, count) in want {
        *expected
            .entry(stack.iter().map(|(function, _)| function.clone()).collect())
            .or_insert(0) += count;
    }
    if traces != expected {
        return Err(format!(
            "go tool pprof -traces shows {traces:#?}\nthe runtime's profile has {expected:#?}"
        ));
    }
    Ok(())
}

/// Runs `check` on each of `builds` of every Go version, and fails with every failure.
fn on_every_version(builds: &[&str], check: fn(&str, &str) -> Result<String, String>) {
    let mut failures = Vec::new();
    for version in go_versions() {
        for &build in builds {
            match check(&version, build) {
                Ok(summary) => eprintln!("go{version} {build}: {summary}"),
                Err(error) => failures.push(format!("go{version} {build}: {error}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn census_stacks_match_the_runtimes_own_goroutine_profile() {
    on_every_version(&["parked"], check);
}

/// The same without symbols or DWARF: layouts from the runtime's code or the offset table,
/// `runtime.allgs` from `runtime.forEachG`'s code (x86-64 code only so far: `cargo xtask
/// test-arm64` runs the test above, not this one).
#[test]
fn census_stacks_of_stripped_builds_match_the_runtimes_own_goroutine_profile() {
    on_every_version(&["parked-stripped"], check);
}

/// How many goroutines of a census show `function` at `file:line` on their stack.
fn parked_at(census: &serde_json::Value, function: &str, location: &str) -> usize {
    census["goroutines"].as_array().map_or(0, |goroutines| {
        goroutines
            .iter()
            .filter(|goroutine| {
                goroutine["stack"].as_array().is_some_and(|stack| {
                    stack.iter().any(|frame| {
                        frame["function"] == function
                            && format!(
                                "{}:{}",
                                frame["file"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .rsplit('/')
                                    .next()
                                    .unwrap_or_default(),
                                frame["line"]
                            ) == location
                    })
                })
            })
            .count()
    })
}

/// Censuses as the daemon publishes them: each new one (by its time stamp) and how many have
/// been seen since attaching.
struct Censuses<'a> {
    ctxleak: &'a Ctxleak,
    last: Option<u64>,
    seen: u64,
}

impl Censuses<'_> {
    /// The next census not seen yet.
    fn next(&mut self) -> Result<serde_json::Value, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = http_get_status(&self.ctxleak.metrics_url, "/api/goroutines");
            if status == 200 {
                let census: serde_json::Value =
                    serde_json::from_str(&body).map_err(|e| e.to_string())?;
                let taken = census["taken_at_unix_ms"].as_u64();
                if taken != self.last {
                    self.last = taken;
                    self.seen += 1;
                    return Ok(census);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no new census for 20 s: {status} {body}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The census reads a goroutine's stack again only when it ran since the last census. The
/// `moving` fixture moves its goroutines from one line to another with the same `g.sched`
/// (sp, bp, pc): the next census or two must show them at the new line, long before the
/// census that rereads every stack anyway (every `FULL_READ_EVERY`th, the 12th here).
fn check_moving(version: &str, build: &str) -> Result<String, String> {
    let mut fixture = common::Driven::start(&fixture(version, build));
    fixture.checkpoint("first")?;
    let (first, second) = (
        fixture.fact("first")?.to_owned(),
        fixture.fact("second")?.to_owned(),
    );
    let count: usize = fixture.fact("count")?.parse().map_err(|_| "bad count")?;
    let ctxleak = Ctxleak::attach_with(fixture.pid(), &["--census-interval", "1s"]);
    let mut censuses = Censuses {
        ctxleak: &ctxleak,
        last: None,
        seen: 0,
    };
    while parked_at(&censuses.next()?, "main.parkFirst", &first) != count {
        if censuses.seen > 5 {
            return Err(format!("{count} goroutines never shown at {first}"));
        }
    }
    // Two more, so that their stacks were kept from an earlier census, not read again.
    for _ in 0..2 {
        let census = censuses.next()?;
        if parked_at(&census, "main.parkFirst", &first) != count {
            return Err(format!("the goroutines left {first} on their own"));
        }
    }
    fixture.send("");
    fixture.checkpoint("second")?;
    let moved_at = censuses.seen;
    loop {
        let census = censuses.next()?;
        let (at_first, at_second) = (
            parked_at(&census, "main.parkFirst", &first),
            parked_at(&census, "main.parkSecond", &second),
        );
        if at_first == 0 && at_second == count {
            break;
        }
        if censuses.seen > moved_at + 3 {
            return Err(format!(
                "3 censuses after the move: {at_first} goroutines still shown at {first}, \
                 {at_second} at {second} (want 0 and {count})"
            ));
        }
    }
    if censuses.seen >= 12 {
        return Err(format!(
            "inconclusive: census {} saw the move, and every 12th rereads every stack",
            censuses.seen
        ));
    }
    Ok(format!(
        "moved goroutines shown at {second} by census {} (moved after census {moved_at})",
        censuses.seen
    ))
}

#[test]
fn goroutines_that_ran_are_reread_even_when_their_sched_is_unchanged() {
    on_every_version(&["moving", "moving-stripped"], check_moving);
}

/// `/api/*` answers as of at most a second ago, whatever the census interval: a request finds
/// the last census too old and has one taken (issue #15: a profile fetched 2 s after 1000
/// goroutines parked showed none of them, because the census ran every 5 s).
#[test]
fn answers_are_fresh_whatever_the_census_interval() {
    let newest = go_versions().pop().expect("a Go version");
    let mut fx = common::Phases::start(&fixture(&newest, "phases"));
    for _ in ["start", "pre-attach"] {
        fx.checkpoint();
        fx.advance();
    }
    let ctxleak = Ctxleak::attach_with(fx.pid(), &["--census-interval", "1h"]);
    for _ in 0..3 {
        let (name, want) = fx.checkpoint();
        // A census up to a second old may answer: ask once the change is older than that.
        std::thread::sleep(Duration::from_millis(1200));
        let asked = Instant::now();
        let (status, body) = http_get_status(&ctxleak.metrics_url, "/api/groups");
        let took = asked.elapsed();
        assert_eq!(status, 200, "{body}");
        let groups: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(
            groups["goroutines_user"].as_u64(),
            Some(want),
            "at {name}, NumGoroutine() is {want}, answered after {took:?}: {body}"
        );
        eprintln!("{name}: {want} goroutines, answered in {took:?}");
        fx.advance();
    }
}
