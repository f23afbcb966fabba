//! A net/http server whose handler starts a goroutine that blocks forever is reported at the
//! handler's `go` line once the request (and its context) ended, with the count the program
//! itself keeps, including goroutines whose context the GC freed and reused for a later
//! request; a well-behaved handler under keep-alive load from 8 clients, with the client
//! side's own contexts and goroutines in the same process, yields no verdict at all.

use crate::common::{Ctxleak, Driven, fixture, go_versions, now_ms, report_after};
use serde_json::Value;

/// Runs one load command (`ok N`, `leak N`) and waits for the server's checkpoint after it.
fn command(server: &mut Driven, line: &str) -> Result<(), String> {
    server.send(line);
    server.checkpoint(line.split(' ').next().unwrap_or_default())
}

/// The first report taken at least 3 s after `since_ms`: the grace period (1 s), the read of
/// cancellations from memory (every second) and a census (500 ms), with room to spare.
fn settled_report(ctxleak: &Ctxleak, since_ms: u64) -> Result<Value, String> {
    report_after(ctxleak, since_ms, 3000, |_| Ok(()))
}

fn check(version: &str) -> Result<String, String> {
    let mut server = Driven::start(&fixture(version, "ctxhttp"));
    server.checkpoint("started")?;
    let ctxleak = Ctxleak::attach_with(
        server.pid(),
        &["--census-interval", "500ms", "--context-grace", "1s"],
    );

    command(&mut server, "ok 2000")?;
    let report = settled_report(&ctxleak, now_ms())?;
    let quiet = |r: &Value| {
        r["outliving"].as_array().is_some_and(Vec::is_empty)
            && r["unreleased"].as_array().is_some_and(Vec::is_empty)
            && r["children_check"]["mismatch"] == 0
    };
    if !quiet(&report) {
        return Err(format!("verdicts on a well-behaved server: {report}"));
    }
    let created = report["contexts_created"].as_u64().unwrap_or(0);
    if created < 4000 {
        return Err(format!(
            "only {created} contexts seen for 2000 requests (at least the request's and the handler's each)"
        ));
    }

    command(&mut server, "leak 20")?;
    let since = now_ms();
    let leak_site = server.fact("leak_site")?.to_owned();
    let leaked: u64 = server
        .fact("leaked")?
        .parse()
        .map_err(|e| format!("bad leaked fact: {e}"))?;
    let reused = server.fact("reused")?.to_owned();
    let report = settled_report(&ctxleak, since)?;
    let outliving = report["outliving"].as_array().cloned().unwrap_or_default();
    let named = |o: &Value| {
        format!(
            "{}:{}",
            o["goroutine_site"]["function"].as_str().unwrap_or("?"),
            o["goroutine_site"]["line"]
        )
    };
    match outliving.as_slice() {
        [one] if named(one) == leak_site && one["count"].as_u64() == Some(leaked) => {}
        _ => {
            return Err(format!(
                "want one verdict of {leaked} goroutines at {leak_site}: {report}"
            ));
        }
    }
    Ok(format!(
        "2000 good requests: no verdict ({created} contexts seen); {leaked} leaked goroutines named at {leak_site}, blocked in {} ({reused} of their contexts at a reused address)",
        outliving[0]["wait_reason"]
    ))
}

#[test]
fn a_handler_goroutine_outliving_its_request_is_named_and_a_good_server_is_not() {
    let mut failures = Vec::new();
    for version in go_versions() {
        match check(&version) {
            Ok(summary) => eprintln!("go{version}: {summary}"),
            Err(error) => failures.push(format!("go{version}: {error}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
