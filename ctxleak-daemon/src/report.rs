//! The leak report as text: what `ctxleak attach` prints when its verdicts change and what
//! `ctxleak report` prints before it exits. Three kinds of finding, each on its own lines:
//! growing goroutine groups (suspects), stuck goroutines (deadlocks, which do not grow), and
//! context verdicts.

use crate::api::{
    ContextListeners, Group, GroupsResponse, LeaksResponse, OutlivingGoroutines, SourceLocation,
    UnreleasedContexts,
};

/// `function (file:line)` with the file's base name only, for one-line summaries.
pub fn short_site(site: &SourceLocation) -> String {
    let file = site.file.rsplit('/').next().unwrap_or(&site.file);
    format!("{} ({file}:{})", site.function, site.line)
}

/// " (about N in all)" after a sampled count, when there is an estimate.
fn about(estimate: Option<u64>) -> String {
    estimate.map_or_else(String::new, |n| format!(" (about {n} in all)"))
}

fn site(site: &Option<SourceLocation>) -> String {
    site.as_ref()
        .map_or_else(|| "an unknown site".to_owned(), short_site)
}

/// One line per context verdict (and one for a self-check mismatch); empty when clean.
pub fn context_lines(
    unreleased: &[UnreleasedContexts],
    outliving: &[OutlivingGoroutines],
    children_mismatch: u64,
) -> Vec<String> {
    let mut lines = Vec::new();
    for u in unreleased {
        lines.push(format!(
            "  unreleased: {} contexts{} created at {} ({} orphaned), oldest {:.0}s, {:+} in {}s{}",
            u.count,
            about(u.estimate),
            site(&u.site),
            u.orphaned,
            u.oldest_age_s,
            u.growth,
            u.window_s,
            u.listeners
                .iter()
                .map(|l| format!("; {}", listeners_summary(l)))
                .collect::<String>()
        ));
    }
    for o in outliving {
        lines.push(format!(
            "  outliving: {} goroutines{} started at {}, {} now, under a context created at {} and cancelled {:.0}s ago",
            o.count,
            about(o.estimate),
            site(&o.goroutine_site),
            if o.wait_reason.is_empty() {
                &o.state
            } else {
                &o.wait_reason
            },
            site(&o.context_site),
            o.oldest_cancelled_s
        ));
    }
    if children_mismatch > 0 {
        lines.push(format!(
            "  self-check: {children_mismatch} children differ from len(parent.children) in memory"
        ));
    }
    lines
}

/// Goroutines waiting on unreleased contexts, in a few words: "2 goroutines wait on it at
/// main.worker (main.go:40) (select; goroutines 17, 18)".
pub fn listeners_summary(listeners: &ContextListeners) -> String {
    let goids: Vec<String> = listeners.goids.iter().map(u64::to_string).collect();
    format!(
        "{} goroutine{} wait{} on it at {} ({}; goroutine{} {}{})",
        listeners.count,
        if listeners.count == 1 { "" } else { "s" },
        if listeners.count == 1 { "s" } else { "" },
        site(&listeners.blocked_at),
        listeners.wait_reason,
        if goids.len() == 1 { "" } else { "s" },
        goids.join(", "),
        if listeners.count > goids.len() as u64 {
            ", ..."
        } else {
            ""
        }
    )
}

/// One leak-suspect group in a line: how many, blocked where and on what, how fast it grows,
/// created where. The per-second line of `attach` and `report` both say it this way.
pub fn suspect_summary(group: &Group) -> String {
    format!(
        "{} goroutines blocked in {} ({}), {:+} in {}s, created at {}",
        group.count,
        site(&group.blocked_at),
        waiting_on(group),
        group.growth_short,
        group.window_short_s,
        site(&group.created_by),
    )
}

/// Why a group's goroutines wait: the runtime's wait reason, or their state.
fn waiting_on(group: &Group) -> &str {
    if group.wait_reason.is_empty() {
        &group.state
    } else {
        &group.wait_reason
    }
}

/// A group's stuck goroutines in a line: how many, blocked where and on what, for how long
/// at least without running (and whose record says so), created where.
pub fn stuck_summary(group: &Group) -> String {
    let channel = group
        .channel
        .map(|evidence| format!("; channel: {}", evidence.summary()))
        .unwrap_or_default();
    format!(
        "{} goroutines blocked in {} ({}), none has run for at least {:.0}s ({}), created at {}{channel}",
        group.stuck,
        site(&group.blocked_at),
        waiting_on(group),
        group.stuck_for_s,
        group.stuck_since.label(),
        site(&group.created_by),
    )
}

/// What a report's context figures are, when the probes were not on all the time: a line
/// saying so, with the share of the time they were on. None when they are totals.
pub fn sampling_line(probes: &crate::api::ProbeState) -> Option<String> {
    if !probes.sampled {
        return None;
    }
    Some(if probes.max_overhead == "0%" {
        "  memory only (--max-overhead 0): goroutines are counted and grouped from memory; no context findings".to_owned()
    } else {
        format!(
            "  sampled: probes on {:.1}% of the last minute, {:.1}% since attached (--max-overhead {}): context figures and created/exited counts are samples; \"about N in all\" scales them by the latter",
            probes.duty * 100.0,
            probes.coverage * 100.0,
            probes.max_overhead
        )
    })
}

/// Whether a report has anything to act on: a context verdict, stuck goroutines or a
/// leak-suspect group.
pub fn found(leaks: &LeaksResponse, groups: &GroupsResponse) -> bool {
    !leaks.unreleased.is_empty()
        || !leaks.outliving.is_empty()
        || !leaks.stuck.is_empty()
        || groups.groups.iter().any(|group| group.suspect)
}

/// The whole report of one process, as `ctxleak report` prints it.
pub fn text(leaks: &LeaksResponse, groups: &GroupsResponse, watched_s: f64) -> String {
    let mut out = format!(
        "ctxleak report: PID {} ({}, {}), watched {watched_s:.0}s: {} goroutines ({} system), {} contexts created, {} cancelled\n",
        leaks.pid,
        leaks.exe,
        leaks.go_version,
        groups.goroutines_user,
        groups.goroutines_system,
        leaks.contexts_created,
        leaks.contexts_cancelled,
    );
    // Growing groups first, then stuck goroutines.
    let goroutines: Vec<String> = groups
        .groups
        .iter()
        .filter(|group| group.suspect)
        .map(|group| format!("  suspect #{}: {}", group.rank, suspect_summary(group)))
        .chain(
            leaks
                .stuck
                .iter()
                .map(|group| format!("  stuck: {}", stuck_summary(group))),
        )
        .collect();
    let contexts = context_lines(
        &leaks.unreleased,
        &leaks.outliving,
        leaks.children_check.mismatch,
    );
    if let Some(line) = sampling_line(&leaks.probes) {
        out.push_str(&line);
        out.push('\n');
    }
    if goroutines.is_empty() && contexts.is_empty() {
        out.push_str("  no leaks found\n");
    }
    for line in goroutines.iter().chain(&contexts) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_goroutines_are_a_finding_on_their_own_lines() {
        let site = |function: &str, line| SourceLocation {
            function: function.into(),
            file: "/src/app/main.go".into(),
            line,
        };
        let group = Group {
            id: "g1".into(),
            count: 2,
            state: "waiting".into(),
            wait_reason: "sync.Mutex.Lock".into(),
            created_by: Some(site("main.start", 60)),
            blocked_at: Some(site("main.start.func1", 66)),
            oldest_age_s: 300.0,
            growth_short: 0,
            growth_long: 0,
            window_short_s: 60,
            window_long_s: 600,
            suspect: false,
            rank: 0,
            stuck: 2,
            stuck_for_s: 299.6,
            stuck_since: crate::api::StuckSince::Runtime,
            channel: None,
            listening: 0,
            listens_on: None,
            stack: Vec::new(),
        };
        let groups: GroupsResponse = serde_json::from_value(serde_json::json!({
            "pid": 1, "exe": "/app", "go_version": "go1.27.3", "taken_at_unix_ms": 0,
            "goroutines_user": 3, "goroutines_system": 4, "groups": [group],
        }))
        .unwrap();
        let mut leaks: LeaksResponse = serde_json::from_value(serde_json::json!({
            "pid": 1, "exe": "/app", "go_version": "go1.27.3", "taken_at_unix_ms": 0,
            "contexts_probed": false, "grace_s": 5.0, "unreleased": [], "outliving": [],
            "children_check": {"mismatch": 0, "parents": []}, "contexts_created": 0,
            "contexts_cancelled": 0, "contexts_tracked": 0, "goroutines_bound": 0,
        }))
        .unwrap();
        assert!(
            !found(&leaks, &groups),
            "not a suspect, and no stuck list yet"
        );
        leaks.stuck = groups.groups.clone();
        assert!(found(&leaks, &groups));
        let text = text(&leaks, &groups, 30.0);
        assert!(
            text.contains(
                "  stuck: 2 goroutines blocked in main.start.func1 (main.go:66) (sync.Mutex.Lock), none has run for at least 300s (runtime), created at main.start (main.go:60)\n"
            ),
            "{text}"
        );
        assert!(!text.contains("no leaks found"), "{text}");
        // A send nobody receives, with its channel's evidence.
        let sends = Group {
            wait_reason: "chan send".into(),
            stuck_since: crate::api::StuckSince::Ctxleak,
            channel: Some(crate::api::ChannelEvidence {
                members: 2,
                channels: 1,
                receivers_waiting: 0,
                senders_waiting: 2,
                buffered: 0,
                capacity: 0,
                closed: false,
                unchanged_for_s: 12.0,
                head_stuck: true,
                confident: true,
            }),
            ..leaks.stuck[0].clone()
        };
        assert_eq!(
            stuck_summary(&sends),
            "2 goroutines blocked in main.start.func1 (main.go:66) (chan send), none has run for at least 300s (ctxleak), created at main.start (main.go:60); channel: all 2 wait on one channel, 2 parked sending, nobody receiving, nothing received since they stuck; high confidence"
        );
    }

    #[test]
    fn sampled_counts_say_their_estimate() {
        let unreleased = UnreleasedContexts {
            site: None,
            count: 12,
            orphaned: 0,
            oldest_age_s: 40.0,
            growth: 3,
            window_s: 60,
            estimate: Some(60),
            listeners: Vec::new(),
        };
        let exact = UnreleasedContexts {
            estimate: None,
            ..unreleased.clone()
        };
        let lines = context_lines(&[unreleased, exact], &[], 0);
        assert!(
            lines[0].starts_with("  unreleased: 12 contexts (about 60 in all) created at"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("  unreleased: 12 contexts created at"),
            "{}",
            lines[1]
        );
    }
}
