//! Context verdicts against the `contexts` fixture's own truth, on every Go version, with and
//! without symbols: unreleased children counted at the line that made them and equal to
//! `len(parent.children)` (read by the fixture with reflect, and by ctxleak from memory);
//! orphaned once their creators exit; a goroutine outliving its cancelled context named by its
//! `go` line, while one that waits on `ctx.Done()` and one started before any context are not;
//! `WithCancelCause`, `AfterFunc`, nested trees, a user-defined parent and a `WithValue` parent
//! counted, `WithoutCancel` children not; a parent made before ctxleak attached; and cancelling
//! that parent releases everything.

use crate::common::{
    Ctxleak, Driven, advance_to, count, fixture, go_versions, report_after, sample, site,
    unreleased_at,
};
use serde_json::Value;

/// The last `len(parent.children)` the fixture printed.
fn children_of(fx: &Driven) -> Result<u64, String> {
    fx.fact("children")?
        .parse()
        .map_err(|e| format!("bad children fact: {e}"))
}

fn mismatch_free(report: &Value, children: u64, parent_tracked: u64) -> Result<(), String> {
    let check = &report["children_check"];
    if check["mismatch"] != 0 {
        return Err(format!("self-check mismatch {}", check["mismatch"]));
    }
    // The biggest parent is the fixture's long-lived one.
    let tracked = check["parents"][0]["tracked"].as_u64().unwrap_or(0);
    if children != parent_tracked || tracked != parent_tracked {
        return Err(format!(
            "len(parent.children) is {children} in the fixture, {tracked} by ctxleak; want {parent_tracked}"
        ));
    }
    Ok(())
}

fn check(version: &str, name: &str, extra: &[&str]) -> Result<String, String> {
    let mut fx = Driven::start(&fixture(version, name));
    fx.checkpoint("pre-attach")?;
    let args: Vec<&str> = ["--census-interval", "500ms", "--context-grace", "1s"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let ctxleak = Ctxleak::attach_with(fx.pid(), &args);
    let pid = fx.pid();

    let at = advance_to(&mut fx, "leaked")?;
    let (leak, clean) = (
        fx.fact("leak_site")?.to_owned(),
        fx.fact("clean_site")?.to_owned(),
    );
    let children = children_of(&fx)?;
    report_after(&ctxleak, at, 0, |r| {
        let leaked = unreleased_at(r, &leak);
        if count(leaked, "count") != 100 || count(leaked, "orphaned") != 0 {
            return Err(format!("want 100 unreleased, 0 orphaned at {leak}"));
        }
        if unreleased_at(r, &clean).is_some() {
            return Err(format!("contexts cancelled with defer reported at {clean}"));
        }
        if r["outliving"].as_array().is_none_or(|o| !o.is_empty()) {
            return Err("goroutines reported as outliving a context".into());
        }
        mismatch_free(r, children, 100)
    })?;
    let metrics = ctxleak.scrape();
    let series = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "ctxleak_contexts_unreleased{{pid=\"{pid}\",site=\""
            )) && l.contains(leak.split(':').next().unwrap_or("?"))
        })
        .map(str::to_owned);
    if !series.as_deref().is_some_and(|l| l.ends_with(" 100")) {
        return Err(format!(
            "no unreleased series of 100 for {leak}: {series:?}"
        ));
    }

    let at = advance_to(&mut fx, "orphaned")?;
    let children = children_of(&fx)?;
    report_after(&ctxleak, at, 0, |r| {
        let leaked = unreleased_at(r, &leak);
        if count(leaked, "count") != 100 || count(leaked, "orphaned") != 100 {
            return Err(format!("want 100 unreleased, all orphaned, at {leak}"));
        }
        mismatch_free(r, children, 100)
    })?;

    let at = advance_to(&mut fx, "cancelled")?;
    let (context_site, blocked, waited, unbound) = (
        fx.fact("outlive_context_site")?.to_owned(),
        fx.fact("outlive_go_site")?.to_owned(),
        fx.fact("done_go_site")?.to_owned(),
        fx.fact("unbound_go_site")?.to_owned(),
    );
    let report = report_after(&ctxleak, at, 1500, |r| {
        let outliving = r["outliving"].as_array().cloned().unwrap_or_default();
        match outliving.as_slice() {
            [one]
                if site(&one["goroutine_site"]) == blocked
                    && site(&one["context_site"]) == context_site
                    && one["wait_reason"] == "select (no cases)"
                    && one["count"] == 1 =>
            {
                Ok(())
            }
            _ => Err(format!(
                "want exactly the select{{}} goroutine of {blocked} under {context_site}; \
                 not {waited} (exited) nor {unbound} (unbound)"
            )),
        }
    })?;
    let outliving_metric = sample(
        &ctxleak.scrape(),
        &format!(
            "ctxleak_goroutines_outliving_context{{pid=\"{pid}\",go_site=\"{}\",context_site=\"{}\",wait_reason=\"select (no cases)\"}}",
            location(&report["outliving"][0]["goroutine_site"]),
            location(&report["outliving"][0]["context_site"]),
        ),
    );
    if outliving_metric != Some(1.0) {
        return Err(format!("outliving series: {outliving_metric:?}"));
    }

    let at = advance_to(&mut fx, "variants")?;
    let variants: Vec<String> = [
        "cause_site",
        "afterfunc_site",
        "nest_site",
        "nested_site",
        "user_site",
        "value_site",
    ]
    .iter()
    .map(|key| fx.fact(key).map(str::to_owned))
    .collect::<Result<_, _>>()?;
    let without = fx.fact("without_site")?.to_owned();
    let children = children_of(&fx)?;
    report_after(&ctxleak, at, 0, |r| {
        for at in &variants {
            if count(unreleased_at(r, at), "count") != 3 {
                return Err(format!("want 3 unreleased at {at}"));
            }
        }
        if unreleased_at(r, &without).is_some() {
            return Err(format!("WithoutCancel children reported at {without}"));
        }
        // 100 leaked + 3 each of cause, AfterFunc, outer, user and value under the parent.
        mismatch_free(r, children, 115)
    })?;

    let at = advance_to(&mut fx, "released")?;
    let children = children_of(&fx)?;
    report_after(&ctxleak, at, 0, |r| {
        if r["unreleased"].as_array().is_none_or(|u| !u.is_empty()) {
            return Err("contexts still unreleased after their parent was cancelled".into());
        }
        if r["children_check"]["mismatch"] != 0 || children != 0 {
            return Err(format!("children left: {children} in the fixture"));
        }
        Ok(())
    })?;
    let metrics = ctxleak.scrape();
    if metrics
        .lines()
        .any(|l| l.starts_with("ctxleak_contexts_unreleased{"))
    {
        return Err("unreleased series remain after the release".into());
    }
    Ok(format!(
        "100 unreleased and orphaned at {leak}, select{{}} goroutine of {blocked} reported, 6 variants, all released"
    ))
}

/// `function (file:line)`, as the metrics label it.
fn location(value: &Value) -> String {
    format!(
        "{} ({}:{})",
        value["function"].as_str().unwrap_or("?"),
        value["file"].as_str().unwrap_or("?"),
        value["line"]
    )
}

fn on_every_version(name: &str, extra: &[&str]) {
    let mut failures = Vec::new();
    for version in go_versions() {
        match check(&version, name, extra) {
            Ok(summary) => eprintln!("go{version} {name}: {summary}"),
            Err(error) => failures.push(format!("go{version} {name}: {error}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn context_verdicts_match_the_programs_own_view() {
    on_every_version("contexts", &[]);
}

#[test]
fn context_verdicts_match_on_stripped_binaries() {
    on_every_version("contexts-stripped", &[]);
}

/// The same verdicts with cancellations probed (`--cancel-probe`) instead of read from
/// memory (each tracked context's `err`, every second), as the two tests above do.
#[test]
fn context_verdicts_match_with_the_cancel_probe() {
    on_every_version("contexts", &["--cancel-probe"]);
}
