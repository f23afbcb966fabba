//! No false alarm on healthy services, and leaks still found within the same time:
//! `ctxleak report --for 45s` with the default suspect rules (the measurement of issue 17)
//! exits 0 on the `healthy` fixture, whose goroutine groups move with load (keep-alive HTTP
//! connections opening and closing, a connection pool, a cache refresher, a worker pool
//! growing to its cap in the first 10 s, a ticker, a pipeline), and exits 1 on the `demo`
//! fixture's leak, ranked first, and on the same keep-alive server with a client that never
//! closes its response bodies (connection-scoped goroutines are judged like any other).
//! Default options, contexts included: the healthy server's in-flight requests hold
//! registered contexts at every moment, which must not count as unreleased.
//!
//! The healthy program's own count is the truth that it leaks nothing: runtime.NumGoroutine()
//! at the end is within the bound its modes have by design. Oldest and newest Go, all six
//! reports at once, so the test takes one watch (about a minute).

use std::process::{Command, Stdio};

use crate::common;
use crate::common::{Driven, finish_json_report as finish, fixture, start_report};
use serde_json::Value;

const WATCH: &[&str] = &["--for", "45s", "--json"];

/// The `healthy` fixture's modes started under a report's watch (the worker pool grows to
/// its cap in its first 10 s), then its own status read once the report ended: the report's
/// exit status and JSON.
fn watched(fx: &mut Driven) -> Result<(Option<i32>, Value), String> {
    fx.checkpoint("started")?;
    let (child, _stderr) = start_report(fx.pid(), WATCH);
    fx.send("");
    fx.checkpoint("running")?;
    let report = finish(child)?;
    fx.send("");
    fx.checkpoint("status")?;
    Ok(report)
}

fn groups(json: &Value) -> Vec<Value> {
    json["groups"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn blocked_in(group: &Value) -> &str {
    group["blocked_at"]["function"].as_str().unwrap_or("?")
}

/// A group in a line, for failures.
fn describe(group: &Value) -> String {
    format!(
        "{} x{} {} ({}), {:+} short, {:+} long, oldest {:.0}s, suspect {}",
        blocked_in(group),
        group["count"],
        group["state"],
        group["wait_reason"],
        group["growth_short"].as_i64().unwrap_or(0),
        group["growth_long"].as_i64().unwrap_or(0),
        group["oldest_age_s"].as_f64().unwrap_or(0.0),
        group["suspect"]
    )
}

fn healthy(version: &str) -> Result<String, String> {
    let mut fx = Driven::start(&fixture(version, "healthy"));
    let (status, json) = watched(&mut fx)?;
    let goroutines: u64 = fx.fact("goroutines")?.parse().map_err(|_| "goroutines")?;
    let bound: u64 = fx.fact("bound")?.parse().map_err(|_| "bound")?;
    if goroutines > bound {
        return Err(format!(
            "the control itself leaked: {goroutines} goroutines, bound {bound}"
        ));
    }
    let groups = groups(&json);
    let suspects: Vec<String> = groups
        .iter()
        .filter(|g| g["suspect"] == true)
        .map(describe)
        .collect();
    if status != Some(0) || !suspects.is_empty() {
        return Err(format!(
            "exit {status:?} on a healthy program, suspects: {suspects:#?}"
        ));
    }
    // The watch saw what used to page: the pool growing to its cap since attach.
    let pool = groups
        .iter()
        .find(|g| blocked_in(g) == "main.poolcap.func1")
        .ok_or("no group of the capped pool's workers")?;
    if pool["count"] != 10 || pool["growth_long"].as_i64().unwrap_or(0) < 5 {
        return Err(format!(
            "the capped pool did not grow under the watch: {}",
            describe(pool)
        ));
    }
    let moved = groups
        .iter()
        .filter(|g| g["growth_long"].as_i64().unwrap_or(0) != 0)
        .count();
    Ok(format!(
        "healthy: exit 0, no suspect among {} groups ({moved} grew or shrank since attach; \
         capped pool {}); {goroutines} goroutines, bound {bound}",
        groups.len(),
        describe(pool)
    ))
}

fn leaking(version: &str) -> Result<String, String> {
    let mut demo = Command::new(fixture(version, "demo"))
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let (child, _stderr) = start_report(demo.id(), WATCH);
    let result = finish(child);
    let _ = demo.kill();
    let _ = demo.wait();
    let (status, json) = result?;
    let groups = groups(&json);
    let first = groups.first().ok_or("no groups")?;
    if status != Some(1)
        || first["rank"] != 1
        || blocked_in(first) != "main.handle.func1"
        || first["wait_reason"] != "chan send"
    {
        let shown: Vec<String> = groups.iter().take(4).map(describe).collect();
        return Err(format!(
            "exit {status:?}, the leak is not suspect #1: {shown:#?}"
        ));
    }
    Ok(format!("demo: exit 1, suspect #1 {}", describe(first)))
}

/// The keep-alive server and a client that never closes its response bodies: the
/// connections' readLoop (or writeLoop) group is a suspect, about as large as the bodies left
/// open by the program's own count.
fn unclosed_bodies(version: &str) -> Result<String, String> {
    let mut fx = Driven::start_with(&fixture(version, "healthy"), &["-modes", "unclosedbody"]);
    let (status, json) = watched(&mut fx)?;
    let unclosed: i64 = fx.fact("unclosed")?.parse().map_err(|_| "unclosed")?;
    let groups = groups(&json);
    let suspect = groups
        .iter()
        .find(|g| g["suspect"] == true && blocked_in(g).starts_with("net/http.(*persistConn)."));
    match suspect {
        Some(group)
            if status == Some(1)
                && (unclosed / 2..=unclosed).contains(&group["count"].as_i64().unwrap_or(0)) =>
        {
            Ok(format!(
                "unclosed bodies: exit 1, suspect #{} {}; {unclosed} bodies left open",
                group["rank"],
                describe(group)
            ))
        }
        _ => {
            let shown: Vec<String> = groups.iter().take(6).map(describe).collect();
            Err(format!(
                "exit {status:?}, no persistConn suspect near {unclosed} bodies left open: {shown:#?}"
            ))
        }
    }
}

#[test]
fn healthy_services_do_not_page_and_a_leak_still_does_within_the_same_watch() {
    common::all_at_once_on_oldest_and_newest(&[healthy, leaking, unclosed_bodies]);
}
