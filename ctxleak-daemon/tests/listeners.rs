//! Contexts handed to workers (issue 17, item 3): a goroutine that receives a context through a
//! channel and parks on its `Done()` *listens on* it, read from its sudogs in memory. On the
//! `workers` fixture, `ctxleak report --for 15s --json`:
//!
//! - `leaky`: exit 1; the contexts it never cancels are unreleased at exactly the line the
//!   fixture records, with exactly its waiters as listeners (count, blocked line, goids), and
//!   their group says it listens on that line;
//! - `healthy`: exit 0 and nothing unreleased or listening, although its pool workers select
//!   on every request's `Done()` while serving it (each context is cancelled, and a worker back
//!   on its work channel listens on nothing).
//!
//! Oldest and newest Go, plain (layout from DWARF) and stripped (derived from code), all eight
//! reports at once (about 20 s). The traffic and the leak start after ctxleak attached:
//! contexts are seen from then on.

use std::collections::BTreeSet;

use crate::common;
use crate::common::{
    Driven, finish_json_report as finish, fixture, json_list as list, start_report,
};
use serde_json::Value;

const WATCH: &[&str] = &["--for", "15s", "--json"];

/// `function:line` of a location.
fn line_of(location: &Value) -> String {
    format!(
        "{}:{}",
        location["function"].as_str().unwrap_or("?"),
        location["line"]
    )
}

/// The fixture in `mode` under `ctxleak report`: its exit status, its JSON and the fixture.
fn watch(version: &str, name: &str, mode: &str) -> Result<(Option<i32>, Value, Driven), String> {
    let mut fx = Driven::start_with(&fixture(version, name), &[mode]);
    fx.checkpoint("started")?;
    let (child, _stderr) = start_report(fx.pid(), WATCH);
    fx.send("");
    fx.checkpoint("running")?;
    let (status, json) = finish(child)?;
    fx.send("");
    fx.checkpoint("status")?;
    Ok((status, json, fx))
}

fn leaky(version: &str, name: &str) -> Result<String, String> {
    let (status, json, fx) = watch(version, name, "leaky")?;
    let context = fx.fact("leak_context")?.to_owned();
    let listener = fx.fact("leak_listener")?.to_owned();
    let goids: BTreeSet<u64> = fx
        .fact("leak_goids")?
        .split(',')
        .map(|goid| goid.parse().map_err(|_| format!("a goid: {goid}")))
        .collect::<Result<_, String>>()?;
    let unreleased = list(&json, &["leaks", "unreleased"]);
    let shown = serde_json::to_string(unreleased).unwrap_or_default();
    let [found] = unreleased else {
        return Err(format!(
            "exit {status:?}, want one unreleased site: {shown}"
        ));
    };
    let listeners = list(found, &["listeners"]);
    let [waiting] = listeners else {
        return Err(format!("want one listening line: {shown}"));
    };
    let found_goids: BTreeSet<u64> = list(waiting, &["goids"])
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    if status != Some(1)
        || line_of(&found["site"]) != context
        || found["count"] != 3
        || line_of(&waiting["blocked_at"]) != listener
        || waiting["count"] != 3
        || found_goids != goids
    {
        return Err(format!(
            "exit {status:?}, {shown}; want 3 contexts at {context} and their waiters {goids:?} at {listener}"
        ));
    }
    let group = list(&json, &["groups", "groups"])
        .iter()
        .find(|group| line_of(&group["blocked_at"]) == listener)
        .ok_or_else(|| format!("no group blocked at {listener}"))?;
    if group["listening"] != 3 || line_of(&group["listens_on"]) != context {
        return Err(format!("the waiters' group says {group}"));
    }
    Ok(format!(
        "{name} leaky: exit 1, 3 contexts at {context}, 3 goroutines wait on them at {listener}"
    ))
}

fn healthy(version: &str, name: &str) -> Result<String, String> {
    let (status, json, _fx) = watch(version, name, "healthy")?;
    let unreleased = list(&json, &["leaks", "unreleased"]);
    let listening: Vec<&Value> = list(&json, &["groups", "groups"])
        .iter()
        .filter(|group| group["listening"] != 0)
        .collect();
    if status != Some(0) || !unreleased.is_empty() || !listening.is_empty() {
        return Err(format!(
            "exit {status:?} on a healthy pool, unreleased {unreleased:?}, listening {listening:?}"
        ));
    }
    let created = json["leaks"]["contexts_created"].as_u64().unwrap_or(0);
    if created < 100 {
        return Err(format!("only {created} contexts seen: was there traffic?"));
    }
    Ok(format!(
        "{name} healthy: exit 0, {created} contexts handed to the pool, none unreleased"
    ))
}

#[test]
fn workers_waiting_on_an_unreleased_context_are_named_and_a_healthy_pool_is_not() {
    common::all_at_once_on_oldest_and_newest(&[
        |version| leaky(version, "workers"),
        |version| leaky(version, "workers-stripped"),
        |version| healthy(version, "workers"),
        |version| healthy(version, "workers-stripped"),
    ]);
}
