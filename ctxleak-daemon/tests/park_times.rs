//! With --park-times, ctxleak knows exactly since when each goroutine has been parked (a
//! gopark probe records it): goroutines that park at a known moment after attaching report a
//! parked time that fits between the moments the test saw.

use std::time::{Duration, Instant};

use crate::common;
use crate::common::{Ctxleak, Phases, fixture, http_get_status};

fn check(version: &str) -> Result<String, String> {
    let mut phases = Phases::start(&fixture(version, "phases"));
    phases.checkpoint();
    let ctxleak = Ctxleak::attach_with(phases.pid(), &["--park-times", "--census-interval", "1s"]);
    // "pre-attach": 300 goroutines park now, after the probes are in.
    let advanced = Instant::now();
    phases.advance();
    let (name, _) = phases.checkpoint();
    let parked_by = Instant::now();
    assert_eq!(name, "pre-attach");
    std::thread::sleep(Duration::from_millis(2500));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get_status(&ctxleak.metrics_url, "/api/goroutines");
        let fetched = Instant::now();
        if status == 200 {
            let census: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| e.to_string())?;
            let parked: Vec<f64> = census["goroutines"]
                .as_array()
                .ok_or("no goroutines")?
                .iter()
                .filter(|g| g["wait_reason"] == "chan receive" && g["system"] == false)
                .filter_map(|g| g["parked_for_s"].as_f64())
                .collect();
            if parked.len() == 300 {
                // The census is at most a second old; the park happened between `advanced`
                // and `parked_by`.
                let longest = fetched.duration_since(advanced).as_secs_f64();
                let shortest = fetched.duration_since(parked_by).as_secs_f64() - 1.2;
                let outside: Vec<&f64> = parked
                    .iter()
                    .filter(|&&p| p > longest || p < shortest)
                    .collect();
                if !outside.is_empty() {
                    return Err(format!(
                        "{} park times outside [{shortest:.2}, {longest:.2}] s: {:?}",
                        outside.len(),
                        &outside[..outside.len().min(5)]
                    ));
                }
                return Ok(format!(
                    "300 park times within [{shortest:.2}, {longest:.2}] s"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} of 300 goroutines have a park time",
                    parked.len()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn park_times_are_exact_for_goroutines_parked_after_attach() {
    common::on_oldest_and_newest(check);
}
