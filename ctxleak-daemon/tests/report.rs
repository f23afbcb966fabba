//! `ctxleak report`: watches for `--for`, prints the leak report and says with its exit status
//! whether it found leaks (1), none (0), or could not run (2), so a CI job can gate on it.

use std::process::{Child, Output};

use crate::common;
use crate::common::{Driven, Lines, ctxleak, fixture};
use serde_json::Value;

/// Starts `ctxleak report` on `pid` with a 1 s census and context grace, and waits until it
/// is attached.
fn report(pid: u32, extra: &[&str]) -> (Child, Lines) {
    let args: Vec<&str> = ["--census-interval", "1s", "--context-grace", "1s"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    common::start_report(pid, &args)
}

fn finish(child: Child) -> Output {
    child.wait_with_output().expect("ctxleak report")
}

fn leaks_found(version: &str) -> Result<String, String> {
    let mut fx = Driven::start(&fixture(version, "contexts"));
    fx.checkpoint("pre-attach")?;
    let (child, _stderr) = report(fx.pid(), &["--for", "4s", "--json"]);
    fx.send("");
    fx.checkpoint("leaked")?;
    let leak_site = fx.fact("leak_site")?.to_owned();
    let output = finish(child);
    if output.status.code() != Some(1) {
        return Err(format!("exit status {:?}, want 1", output.status));
    }
    let json: Value = serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
    let unreleased = json["leaks"]["unreleased"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let named = unreleased.iter().find(|u| {
        format!(
            "{}:{}",
            u["site"]["function"].as_str().unwrap_or("?"),
            u["site"]["line"]
        ) == leak_site
    });
    match named {
        Some(u) if json["leaks_found"] == true && u["count"] == 100 => Ok(format!(
            "exit 1, 100 unreleased contexts at {leak_site} in the JSON report"
        )),
        _ => Err(format!("no 100 unreleased at {leak_site}: {json}")),
    }
}

fn no_leaks(version: &str) -> Result<String, String> {
    let mut server = Driven::start(&fixture(version, "ctxhttp"));
    server.checkpoint("started")?;
    let (child, _stderr) = report(server.pid(), &["--for", "4s"]);
    server.send("ok 500");
    server.checkpoint("ok")?;
    let output = finish(child);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.code() != Some(0) || !text.contains("no leaks found") {
        return Err(format!("exit {:?}, report:\n{text}", output.status));
    }
    Ok(format!(
        "exit 0: {}",
        text.lines().next().unwrap_or_default()
    ))
}

#[test]
fn report_exits_1_with_the_leaks_it_found() {
    common::on_oldest_and_newest(leaks_found);
}

#[test]
fn report_exits_0_on_a_well_behaved_server_under_load() {
    common::on_oldest_and_newest(no_leaks);
}

#[test]
fn report_exits_2_when_it_cannot_run() {
    let output = ctxleak()
        .args(["report", "--pid", "999999999", "--for", "1s"])
        .output()
        .expect("ctxleak report");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("999999999"), "{stderr}");
}
