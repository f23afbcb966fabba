//! "Stuck" verdicts for leaks that do not grow (issue 17, item 2): `ctxleak report --for 30s
//! --stuck-after 10s` exits 1 on the `deadlock` fixture, naming exactly the lines where its
//! goroutines block forever (a lock-order deadlock between two goroutines, three sends nobody
//! receives) and how many block at each, as the fixture's own record of them says, apart from
//! the growing-leak suspects (there are none). Beside them, goroutines that wait the same way
//! but run (a contended mutex, a producer waiting in `chan send` for a slow consumer, a
//! coordinator's `WaitGroup.Wait`) and idle ones (receives, selects, a sleep) are not stuck.
//! The sends nobody receives carry channel evidence as the fixture knows them (`fact sends`:
//! all on one unbuffered channel, no receiver parked on it, nothing received since: high
//! confidence); the locks carry none, nor does the idle pool receiving on its job channel.
//! The `healthy` fixture under the same flags has no stuck goroutine and exits 0.
//!
//! The deadlocks happen before ctxleak attaches, as a real one would. Oldest and newest Go,
//! all four reports at once (about 35 s).
//!
//! The runtime's record (`g.waitsince`, `groups::GroupTracker::runtime_bounds`): the same
//! fixture with its GC under its own control blocks, runs GCs that record the stuck
//! goroutines (`deadlock gc`), and waits [`BEFORE`] before ctxleak attaches for
//! [`RUNTIME_WATCH`], shorter than `--stuck-after`: the report exits 1 naming exactly the
//! fixture's lines, stuck for at least the time before the attach, by the runtime's record;
//! with DWARF and stripped. The control (`deadlock nogc`, no GC ran: no record) exits 0, its
//! goroutines not stuck for ctxleak's own few seconds. Oldest and newest Go, six reports at
//! once (about 20 s).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common;
use crate::common::{
    Driven, finish_json_report as finish, fixture, json_list as list, start_report,
};
use serde_json::Value;

const WATCH: &[&str] = &["--for", "30s", "--stuck-after", "10s", "--json"];

/// `function:line` where a group is blocked.
fn line_of(group: &Value) -> String {
    format!(
        "{}:{}",
        group["blocked_at"]["function"].as_str().unwrap_or("?"),
        group["blocked_at"]["line"]
    )
}

fn describe(group: &Value) -> String {
    format!(
        "{} x{} ({}), stuck {} for {:.0}s, suspect {}",
        line_of(group),
        group["count"],
        group["wait_reason"],
        group["stuck"],
        group["stuck_for_s"].as_f64().unwrap_or(0.0),
        group["suspect"]
    )
}

/// The fixture's truth: "function:line=N;..." as line -> count, of `stuck` or `sends`.
fn truth_of(fx: &Driven, fact: &str) -> Result<BTreeMap<String, u64>, String> {
    fx.fact(fact)?
        .split(';')
        .map(|entry| {
            let (line, count) = entry.rsplit_once('=').ok_or("a fact stuck without =")?;
            Ok((line.to_owned(), count.parse().map_err(|_| "a count")?))
        })
        .collect::<Result<_, &str>>()
        .map_err(str::to_owned)
}

/// The stuck groups of a report, described, if it exited 1 with exactly the program's own
/// `truth` (blocked line → goroutines) as its stuck groups, one group per line.
fn exactly(
    status: Option<i32>,
    stuck: &[Value],
    truth: &BTreeMap<String, u64>,
) -> Result<Vec<String>, String> {
    let found: BTreeMap<String, u64> = stuck
        .iter()
        .map(|group| (line_of(group), group["stuck"].as_u64().unwrap_or(0)))
        .collect();
    let shown: Vec<String> = stuck.iter().map(describe).collect();
    if status != Some(1) || found != *truth || found.len() != stuck.len() {
        return Err(format!(
            "exit {status:?}, stuck {shown:#?}, want exactly {truth:?}"
        ));
    }
    Ok(shown)
}

fn deadlocked(version: &str) -> Result<String, String> {
    let mut fx = Driven::start(&fixture(version, "deadlock"));
    fx.checkpoint("started")?;
    fx.send("");
    fx.checkpoint("running")?;
    let (child, _stderr) = start_report(fx.pid(), WATCH);
    let (status, json) = finish(child)?;
    fx.send("");
    fx.checkpoint("status")?;
    let truth = truth_of(&fx, "stuck")?;
    let sends = truth_of(&fx, "sends")?;
    let stuck = list(&json, &["leaks", "stuck"]);
    let shown = exactly(status, stuck, &truth)?;
    let groups = list(&json, &["groups", "groups"]);
    let suspects: Vec<String> = groups
        .iter()
        .filter(|g| g["suspect"] == true)
        .map(describe)
        .collect();
    if !suspects.is_empty() {
        return Err(format!(
            "a deadlock does not grow, yet suspects {suspects:#?}"
        ));
    }
    // Channel evidence: the sends nobody receives wait, all of them, on one channel with no
    // receiver and nothing received since (high confidence); the locks have none.
    for group in stuck {
        let line = line_of(group);
        let evidence = &group["channel"];
        let expected = sends.get(&line);
        let as_known = match expected {
            Some(&members) => {
                evidence["members"] == members
                    && evidence["channels"] == 1
                    && evidence["senders_waiting"] == members
                    && evidence["receivers_waiting"] == 0
                    && evidence["capacity"] == 0
                    && evidence["confident"] == true
            }
            None => evidence.is_null(),
        };
        if !as_known {
            return Err(format!(
                "{line}: channel evidence {evidence}, the fixture knows {expected:?} senders on one unbuffered channel nobody receives from"
            ));
        }
    }
    // The controls were seen waiting as the stuck ones do, and are not stuck.
    for (function, reason) in [
        ("main.contended.func1", "sync.Mutex.Lock"),
        ("main.batches.func2", "chan send"),
        ("main.idle.func1", "chan receive"),
    ] {
        let control = groups
            .iter()
            .find(|g| g["blocked_at"]["function"] == function && g["wait_reason"] == reason)
            .ok_or_else(|| format!("no group of {function} waiting in {reason}"))?;
        if control["stuck"] != 0 || !control["channel"].is_null() {
            return Err(format!("a control is stuck: {}", describe(control)));
        }
    }
    Ok(format!("deadlock: exit 1, stuck {shown:?}"))
}

fn healthy(version: &str) -> Result<String, String> {
    let mut fx = Driven::start(&fixture(version, "healthy"));
    fx.checkpoint("started")?;
    fx.send("");
    fx.checkpoint("running")?;
    let (child, _stderr) = start_report(fx.pid(), WATCH);
    let (status, json) = finish(child)?;
    let stuck: Vec<String> = list(&json, &["leaks", "stuck"])
        .iter()
        .map(describe)
        .collect();
    if status != Some(0) || !stuck.is_empty() {
        return Err(format!(
            "exit {status:?} on a healthy program, stuck {stuck:#?}"
        ));
    }
    let groups = list(&json, &["groups", "groups"]).len();
    Ok(format!(
        "healthy: exit 0, nothing stuck among {groups} groups"
    ))
}

#[test]
fn one_shot_deadlocks_are_stuck_and_busy_or_idle_waits_are_not() {
    common::all_at_once_on_oldest_and_newest(&[deadlocked, healthy]);
}

/// How long the fixture has been deadlocked when ctxleak attaches...
const BEFORE: Duration = Duration::from_secs(12);
/// ...for this long, with `--stuck-after 10s`: only the runtime's record can make it stuck.
const RUNTIME_WATCH: &[&str] = &["--for", "4s", "--stuck-after", "10s", "--json"];

/// What [`watched_late`] found.
struct Late {
    status: Option<i32>,
    stuck: Vec<Value>,
    truth: BTreeMap<String, u64>,
    gcs: u64,
}

/// `deadlock MODE` (`gc` or `nogc`), `BEFORE` after its goroutines blocked, watched for
/// `RUNTIME_WATCH`: the report's exit status and stuck groups, the fixture's truth and GC
/// count.
fn watched_late(version: &str, program: &str, mode: &str) -> Result<Late, String> {
    let mut fx = Driven::start_with(&fixture(version, program), &[mode]);
    fx.checkpoint("started")?;
    fx.send("");
    fx.checkpoint("running")?;
    std::thread::sleep(BEFORE);
    let (child, _stderr) = start_report(fx.pid(), RUNTIME_WATCH);
    let (status, json) = finish(child)?;
    fx.send("");
    fx.checkpoint("status")?;
    let gcs = fx
        .fact("gcs")?
        .parse()
        .map_err(|_| "fact gcs is not a number")?;
    Ok(Late {
        status,
        stuck: list(&json, &["leaks", "stuck"]).to_vec(),
        truth: truth_of(&fx, "stuck")?,
        gcs,
    })
}

fn recorded_by_the_runtime(version: &str, program: &str) -> Result<String, String> {
    let Late {
        status,
        stuck,
        truth,
        gcs,
    } = watched_late(version, program, "gc")?;
    let shown = exactly(status, &stuck, &truth)
        .map_err(|why| format!("{program} after {gcs} GCs: {why}"))?;
    // Each stuck since before the attach, as the runtime recorded it.
    for group in &stuck {
        let stuck_for = group["stuck_for_s"].as_f64().unwrap_or(0.0);
        if group["stuck_since"] != "runtime" || stuck_for < BEFORE.as_secs_f64() {
            return Err(format!(
                "{program}: {} is stuck since {} for {stuck_for:.1}s, not by the runtime's record for at least {BEFORE:?}",
                line_of(group),
                group["stuck_since"]
            ));
        }
    }
    Ok(format!("{program} gc: exit 1, stuck {shown:?}"))
}

fn runtime_record(version: &str) -> Result<String, String> {
    recorded_by_the_runtime(version, "deadlock")
}

fn runtime_record_stripped(version: &str) -> Result<String, String> {
    recorded_by_the_runtime(version, "deadlock-stripped")
}

fn no_record_without_a_gc(version: &str) -> Result<String, String> {
    let Late {
        status, stuck, gcs, ..
    } = watched_late(version, "deadlock", "nogc")?;
    let shown: Vec<String> = stuck.iter().map(describe).collect();
    if gcs != 0 {
        return Err(format!("the control ran {gcs} GCs: it cannot tell"));
    }
    if status != Some(0) || !stuck.is_empty() {
        return Err(format!(
            "no GC ran, yet exit {status:?}, stuck {shown:#?} within {RUNTIME_WATCH:?}"
        ));
    }
    Ok("nogc: exit 0, nothing stuck yet".to_owned())
}

#[test]
fn a_deadlock_older_than_the_attach_is_stuck_at_once_by_the_runtimes_record() {
    common::all_at_once_on_oldest_and_newest(&[
        runtime_record,
        runtime_record_stripped,
        no_record_without_a_gc,
    ]);
}
