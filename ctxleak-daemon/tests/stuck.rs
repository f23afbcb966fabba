//! "Stuck" verdicts for leaks that do not grow (issue 17, item 2): `ctxleak report --for 30s
//! --stuck-after 10s` exits 1 on the `deadlock` fixture, naming exactly the lines where its
//! goroutines block forever (a lock-order deadlock between two goroutines, three sends nobody
//! receives) and how many block at each, as the fixture's own record of them says, apart from
//! the growing-leak suspects (there are none). Beside them, goroutines that wait the same way
//! but run (a contended mutex, a producer waiting in `chan send` for a slow consumer, a
//! coordinator's `WaitGroup.Wait`) and idle ones (receives, selects, a sleep) are not stuck.
//! The `healthy` fixture under the same flags has no stuck goroutine and exits 0.
//!
//! The deadlocks happen before ctxleak attaches, as a real one would. Oldest and newest Go,
//! all four reports at once (about 35 s).

use std::collections::BTreeMap;

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

fn deadlocked(version: &str) -> Result<String, String> {
    let mut fx = Driven::start(&fixture(version, "deadlock"));
    fx.checkpoint("started")?;
    fx.send("");
    fx.checkpoint("running")?;
    let (child, _stderr) = start_report(fx.pid(), WATCH);
    let (status, json) = finish(child)?;
    fx.send("");
    fx.checkpoint("status")?;
    // The fixture's truth: "function:line=N;..."
    let truth: BTreeMap<String, u64> = fx
        .fact("stuck")?
        .split(';')
        .map(|entry| {
            let (line, count) = entry.rsplit_once('=').ok_or("a fact stuck without =")?;
            Ok((line.to_owned(), count.parse().map_err(|_| "a count")?))
        })
        .collect::<Result<_, &str>>()?;
    let stuck = list(&json, &["leaks", "stuck"]);
    let found: BTreeMap<String, u64> = stuck
        .iter()
        .map(|group| (line_of(group), group["stuck"].as_u64().unwrap_or(0)))
        .collect();
    let shown: Vec<String> = stuck.iter().map(describe).collect();
    if status != Some(1) || found != truth || found.len() != stuck.len() {
        return Err(format!(
            "exit {status:?}, stuck {shown:#?}, want exactly {truth:?}"
        ));
    }
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
    // The controls were seen waiting as the stuck ones do, and are not stuck.
    for (function, reason) in [
        ("main.contended.func1", "sync.Mutex.Lock"),
        ("main.batches.func2", "chan send"),
    ] {
        let control = groups
            .iter()
            .find(|g| g["blocked_at"]["function"] == function && g["wait_reason"] == reason)
            .ok_or_else(|| format!("no group of {function} waiting in {reason}"))?;
        if control["stuck"] != 0 {
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
