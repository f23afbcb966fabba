//! A growing leak is ranked first as a suspect and a stable pool of idle workers is not: the
//! demo leaks about two goroutines a second (a worker blocked sending its result to a
//! handler that timed out) beside a constant pool of eight idle workers.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{Ctxleak, fixture, http_get_status};

fn check(version: &str) -> Result<String, String> {
    let mut demo = Command::new(fixture(version, "demo"))
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    // Short windows so the verdict comes within seconds: suspects must have grown over the
    // last 4 s and the last 12 s, with a member blocked for 3 s.
    let ctxleak = Ctxleak::attach_with(
        demo.id(),
        &[
            "--census-interval",
            "1s",
            "--suspect-window-short",
            "4s",
            "--suspect-window-long",
            "12s",
            "--suspect-min-age",
            "3s",
        ],
    );
    let started = Instant::now();
    let result = loop {
        std::thread::sleep(Duration::from_secs(1));
        let (status, body) = http_get_status(&ctxleak.metrics_url, "/api/groups");
        if status != 200 {
            continue;
        }
        let response: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let groups = response["groups"].as_array().cloned().unwrap_or_default();
        let blocked_in = |group: &serde_json::Value| {
            group["blocked_at"]["function"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let leak = groups
            .iter()
            .find(|g| blocked_in(g) == "main.handle.func1" && g["wait_reason"] == "chan send");
        let pool = groups
            .iter()
            .find(|g| blocked_in(g) == "main.worker" && g["wait_reason"] == "chan receive");
        if let (Some(leak), Some(pool)) = (leak, pool)
            && leak["rank"] == 1
            && groups[0]["id"] == leak["id"]
        {
            if pool["suspect"] != false || pool["count"] != 8 || pool["growth_long"] != 0 {
                break Err(format!("the idle pool is flagged or moving: {pool}"));
            }
            let metrics = ctxleak.scrape();
            let series = metrics.lines().find(|l| {
                l.starts_with("ctxleak_leak_suspect_goroutines{") && l.contains("rank=\"1\"")
            });
            match series {
                Some(line) if line.contains("main.handle.func1") => {}
                other => break Err(format!("no rank-1 suspect series for the leak: {other:?}")),
            }
            break Ok(format!(
                "leak ranked first after {:.0} s: {} goroutines, +{} over {} s; pool of {} not a suspect",
                started.elapsed().as_secs_f64(),
                leak["count"],
                leak["growth_short"],
                leak["window_short_s"],
                pool["count"]
            ));
        }
        if started.elapsed() > Duration::from_secs(40) {
            break Err(format!("no verdict after 40 s: {body}"));
        }
    };
    let _ = demo.kill();
    let _ = demo.wait();
    result
}

#[test]
fn a_growing_leak_is_ranked_first_and_an_idle_pool_is_not_a_suspect() {
    common::on_oldest_and_newest(check);
}
