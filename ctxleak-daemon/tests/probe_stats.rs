//! `--probe-stats`: the kernel's count of each probe's runs equals the events ctxleak received
//! from it (plus any it could not read or send), on a net/http server under load; each probe
//! that ran reports a run time, and a probe left out (`goroutine_parked` without
//! `--park-times`) reports nothing. With `--cancel-probe`, so that every context probe runs.

use std::time::{Duration, Instant};

use crate::common::{Ctxleak, Driven, fixture, on_oldest_and_newest, sample};

/// The exported probe statistics are refreshed every second.
const SETTLE: Duration = Duration::from_secs(10);

fn runs(metrics: &str, probe: &str) -> f64 {
    sample(
        metrics,
        &format!(r#"ctxleak_probe_runs_total{{probe="{probe}"}}"#),
    )
    .unwrap_or(0.0)
}

fn seconds(metrics: &str, probe: &str) -> f64 {
    sample(
        metrics,
        &format!(r#"ctxleak_probe_run_seconds_total{{probe="{probe}"}}"#),
    )
    .unwrap_or(0.0)
}

fn check(version: &str) -> Result<String, String> {
    let mut server = Driven::start(&fixture(version, "ctxhttp"));
    server.checkpoint("started")?;
    // Every probe there is, the cancellation probe included (by default cancellations are
    // read from memory).
    let ctxleak = Ctxleak::attach_with(server.pid(), &["--probe-stats", "--cancel-probe"]);
    server.send("ok 500");
    server.checkpoint("ok")?;
    let pid = server.pid();
    let counter = |metrics: &str, name: &str| {
        sample(metrics, &format!(r#"ctxleak_{name}_total{{pid="{pid}"}}"#)).unwrap_or(0.0)
    };

    // Kernel runs of each probe against the events the daemon decoded from it; a run that
    // sent nothing was counted as a read error or a lost event.
    let compare = |metrics: &str| -> Vec<String> {
        let unsent = sample(metrics, "ctxleak_probe_read_errors_total").unwrap_or(0.0)
            + sample(metrics, "ctxleak_events_lost_total").unwrap_or(0.0);
        let pairs = [
            (
                "goroutine_created + goroutine_enqueued",
                runs(metrics, "goroutine_created") + runs(metrics, "goroutine_enqueued"),
                counter(metrics, "goroutines_created"),
            ),
            (
                "goroutine_exited",
                runs(metrics, "goroutine_exited"),
                counter(metrics, "goroutines_exited"),
            ),
            (
                "context_created",
                runs(metrics, "context_created"),
                counter(metrics, "contexts_created"),
            ),
            (
                "context_cancelled",
                runs(metrics, "context_cancelled"),
                counter(metrics, "contexts_cancelled"),
            ),
        ];
        pairs
            .iter()
            .filter(|(_, runs, events)| !(*runs >= *events && *runs <= *events + unsent))
            .map(|(probe, runs, events)| {
                format!("{probe}: the kernel ran it {runs} times, ctxleak got {events} events")
            })
            .collect()
    };
    // Settled once every request's contexts have arrived and the kernel's counts (refreshed
    // every second) caught up with them: before that, zero runs and zero events "match".
    let deadline = Instant::now() + SETTLE;
    let metrics = loop {
        let metrics = ctxleak.scrape();
        let settled =
            compare(&metrics).is_empty() && counter(&metrics, "contexts_created") >= 1000.0;
        if settled || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mismatches = compare(&metrics);
    if !mismatches.is_empty() {
        return Err(mismatches.join("; "));
    }
    let contexts = counter(&metrics, "contexts_created");
    if contexts < 1000.0 {
        return Err(format!(
            "only {contexts} contexts created for 500 requests (the request's and the handler's each)"
        ));
    }
    for probe in [
        "goroutine_exited",
        "context_created",
        "context_registered",
        "context_cancelled",
    ] {
        let (runs, seconds) = (runs(&metrics, probe), seconds(&metrics, probe));
        // Anything from a few ns to a few µs a run is plausible; zero or a millisecond is not.
        if !(seconds > 0.0 && seconds / runs < 1e-3) {
            return Err(format!("{probe}: {runs} runs took {seconds} s"));
        }
    }
    if metrics.contains(r#"probe="goroutine_parked""#) {
        return Err("goroutine_parked has statistics but was not attached".into());
    }
    let per_run = |probe: &str| seconds(&metrics, probe) / runs(&metrics, probe) * 1e9;
    Ok(format!(
        "{contexts} contexts, {} goroutines: ns per run: context_created {:.0}, context_registered {:.0}, context_cancelled {:.0}, goroutine_exited {:.0}",
        counter(&metrics, "goroutines_created"),
        per_run("context_created"),
        per_run("context_registered"),
        per_run("context_cancelled"),
        per_run("goroutine_exited"),
    ))
}

#[test]
fn each_probes_kernel_run_count_matches_the_events_ctxleak_received() {
    on_oldest_and_newest(check);
}
