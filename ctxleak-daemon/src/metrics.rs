//! ctxleak's Prometheus metrics (OpenMetrics text) and the HTTP endpoint that serves them.

use std::net::SocketAddr;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::tracker::{Counts, GoroutineKind};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GoroutineLabels {
    pid: u32,
    /// "user" or "system".
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    pid: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    pid: u32,
    state: String,
    wait_reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SuspectLabels {
    pid: u32,
    rank: u32,
    created_by: String,
    blocked_at: String,
    wait_reason: String,
}

/// At most this many suspect groups get their own series: enough for an alert and a
/// dashboard table, bounded whatever the target does.
pub const MAX_SUSPECT_SERIES: usize = 10;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContextSiteLabels {
    pid: u32,
    /// `function (file:line)` of the `WithCancel`/`WithTimeout`/... call; "other" for the
    /// sites beyond [`MAX_CONTEXT_SERIES`].
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutlivingLabels {
    pid: u32,
    go_site: String,
    context_site: String,
    wait_reason: String,
}

/// At most this many context sites (and outliving groups) get their own series; the rest
/// are summed into one `site="other"` series, so cardinality stays bounded.
pub const MAX_CONTEXT_SERIES: usize = 20;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetInfoLabels {
    pid: u32,
    exe: String,
    go_version: String,
}

pub struct Metrics {
    registry: Registry,
    goroutines: Family<GoroutineLabels, Gauge>,
    created: Family<TargetLabels, Counter>,
    exited: Family<TargetLabels, Counter>,
    resyncs: Family<TargetLabels, Counter>,
    disagreements: Family<TargetLabels, Counter>,
    target_info: Family<TargetInfoLabels, Gauge>,
    by_state: Family<StateLabels, Gauge>,
    suspects: Family<SuspectLabels, Gauge>,
    suspect_count: Family<TargetLabels, Gauge>,
    contexts_created: Family<TargetLabels, Counter>,
    contexts_cancelled: Family<TargetLabels, Counter>,
    unreleased: Family<ContextSiteLabels, Gauge>,
    orphaned: Family<ContextSiteLabels, Gauge>,
    outliving: Family<OutlivingLabels, Gauge>,
    children_mismatch: Family<TargetLabels, Gauge>,
    pub events_lost: Counter,
    pub probe_read_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ctxleak");
        let metrics = Self {
            goroutines: Family::default(),
            created: Family::default(),
            exited: Family::default(),
            resyncs: Family::default(),
            disagreements: Family::default(),
            target_info: Family::default(),
            by_state: Family::default(),
            suspects: Family::default(),
            suspect_count: Family::default(),
            contexts_created: Family::default(),
            contexts_cancelled: Family::default(),
            unreleased: Family::default(),
            orphaned: Family::default(),
            outliving: Family::default(),
            children_mismatch: Family::default(),
            events_lost: Counter::default(),
            probe_read_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "goroutines",
            "Live goroutines of a watched process; kind=user is what runtime.NumGoroutine() counts, kind=system the runtime's own",
            metrics.goroutines.clone(),
        );
        registry.register(
            "goroutines_created",
            "Goroutines created since ctxleak attached",
            metrics.created.clone(),
        );
        registry.register(
            "goroutines_exited",
            "Goroutines exited since ctxleak attached",
            metrics.exited.clone(),
        );
        registry.register(
            "events_lost",
            "Probe events dropped because the ring buffer was full (each loss triggers a resync from the target's memory)",
            metrics.events_lost.clone(),
        );
        registry.register(
            "probe_read_errors",
            "Probe hits whose read of the target's memory failed (no event was sent)",
            metrics.probe_read_errors.clone(),
        );
        registry.register(
            "resyncs",
            "Times the live goroutine set was rebuilt from the target's memory after lost events",
            metrics.resyncs.clone(),
        );
        registry.register(
            "census_disagreements",
            "Goroutines on which the probe events and the memory census disagreed (a missed event); each is repaired from the census",
            metrics.disagreements.clone(),
        );
        registry.register(
            "goroutines_by_state",
            "User goroutines at the last census by state and, when waiting, the runtime's wait reason",
            metrics.by_state.clone(),
        );
        registry.register(
            "leak_suspect_goroutines",
            "Goroutines in a leak-suspect group (growing over both windows, oldest member blocked longer than the threshold), by rank and site; the top groups only",
            metrics.suspects.clone(),
        );
        registry.register(
            "leak_suspect_groups",
            "Number of leak-suspect groups at the last census",
            metrics.suspect_count.clone(),
        );
        registry.register(
            "contexts_created",
            "cancelCtx, timerCtx and afterFuncCtx contexts created since ctxleak attached",
            metrics.contexts_created.clone(),
        );
        registry.register(
            "contexts_cancelled",
            "Cancellations of those contexts (by their cancel func, a deadline or a parent) since ctxleak attached",
            metrics.contexts_cancelled.clone(),
        );
        registry.register(
            "contexts_unreleased",
            "Contexts still registered in their parent's children map and not cancelled, by the line that created them (the top sites; the rest as site=\"other\")",
            metrics.unreleased.clone(),
        );
        registry.register(
            "contexts_orphaned",
            "Unreleased contexts whose creating goroutine has exited, so nobody can cancel them (runtime lostcancel), by creation site",
            metrics.orphaned.clone(),
        );
        registry.register(
            "goroutines_outliving_context",
            "Live goroutines started under a context cancelled more than the grace period ago, by go statement, context creation site and wait reason",
            metrics.outliving.clone(),
        );
        registry.register(
            "context_children_mismatch",
            "Self-check: sum over parents of |children ctxleak tracks - len(parent.children) in memory| (children registered before ctxleak attached count too)",
            metrics.children_mismatch.clone(),
        );
        registry.register(
            "target_info",
            "A watched process (always 1): its executable and Go version",
            metrics.target_info.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

/// The metrics of one watched process.
pub struct TargetMetrics {
    user: Gauge,
    system: Gauge,
    pub created: Counter,
    pub exited: Counter,
    pub resyncs: Counter,
    pub disagreements: Counter,
    pub contexts_created: Counter,
    pub contexts_cancelled: Counter,
}

impl TargetMetrics {
    pub fn set_counts(&self, counts: Counts) {
        self.user
            .set(i64::try_from(counts.user).unwrap_or(i64::MAX));
        self.system
            .set(i64::try_from(counts.system).unwrap_or(i64::MAX));
    }
}

impl Metrics {
    pub fn add_target(&self, pid: u32, exe: &str, go_version: &str) -> TargetMetrics {
        self.target_info
            .get_or_create(&TargetInfoLabels {
                pid,
                exe: exe.to_owned(),
                go_version: go_version.to_owned(),
            })
            .set(1);
        let target = TargetLabels { pid };
        let gauge = |kind: GoroutineKind| {
            let kind = match kind {
                GoroutineKind::User => "user",
                GoroutineKind::System => "system",
            };
            self.goroutines
                .get_or_create(&GoroutineLabels { pid, kind })
                .clone()
        };
        TargetMetrics {
            user: gauge(GoroutineKind::User),
            system: gauge(GoroutineKind::System),
            created: self.created.get_or_create(&target).clone(),
            exited: self.exited.get_or_create(&target).clone(),
            resyncs: self.resyncs.get_or_create(&target).clone(),
            disagreements: self.disagreements.get_or_create(&target).clone(),
            contexts_created: self.contexts_created.get_or_create(&target).clone(),
            contexts_cancelled: self.contexts_cancelled.get_or_create(&target).clone(),
        }
    }

    /// Replaces the census-derived series of `pid` with those of `groups` (user goroutines).
    pub fn set_census(&self, pid: u32, groups: &[crate::api::Group]) {
        // Series of states and suspects that went away must disappear, so start afresh. Other
        // targets' series go too; with one target per process that is none.
        self.by_state.clear();
        self.suspects.clear();
        for group in groups {
            let labels = StateLabels {
                pid,
                state: group.state.clone(),
                wait_reason: group.wait_reason.clone(),
            };
            self.by_state
                .get_or_create(&labels)
                .inc_by(i64::try_from(group.count).unwrap_or(i64::MAX));
        }
        let location = |l: &Option<crate::api::SourceLocation>| {
            l.as_ref().map(ToString::to_string).unwrap_or_default()
        };
        let suspects: Vec<_> = groups.iter().filter(|g| g.suspect).collect();
        for group in suspects.iter().take(MAX_SUSPECT_SERIES) {
            let labels = SuspectLabels {
                pid,
                rank: group.rank,
                created_by: location(&group.created_by),
                blocked_at: location(&group.blocked_at),
                wait_reason: group.wait_reason.clone(),
            };
            self.suspects
                .get_or_create(&labels)
                .set(i64::try_from(group.count).unwrap_or(i64::MAX));
        }
        self.suspect_count
            .get_or_create(&TargetLabels { pid })
            .set(i64::try_from(suspects.len()).unwrap_or(i64::MAX));
    }

    /// Replaces the context verdict series of `pid`.
    pub fn set_contexts(&self, pid: u32, verdicts: &crate::contexts::Verdicts) {
        self.unreleased.clear();
        self.orphaned.clear();
        self.outliving.clear();
        let location = |l: &Option<crate::api::SourceLocation>| {
            l.as_ref()
                .map_or_else(|| "unknown".to_owned(), ToString::to_string)
        };
        let gauge_value = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for (index, group) in verdicts.unreleased.iter().enumerate() {
            let site = if index < MAX_CONTEXT_SERIES {
                location(&group.site)
            } else {
                "other".to_owned()
            };
            let labels = ContextSiteLabels { pid, site };
            self.unreleased
                .get_or_create(&labels)
                .inc_by(gauge_value(group.count));
            if group.orphaned > 0 {
                self.orphaned
                    .get_or_create(&labels)
                    .inc_by(gauge_value(group.orphaned));
            }
        }
        for (index, group) in verdicts.outliving.iter().enumerate() {
            let labels = if index < MAX_CONTEXT_SERIES {
                OutlivingLabels {
                    pid,
                    go_site: location(&group.goroutine_site),
                    context_site: location(&group.context_site),
                    wait_reason: group.wait_reason.clone(),
                }
            } else {
                OutlivingLabels {
                    pid,
                    go_site: "other".into(),
                    context_site: "other".into(),
                    wait_reason: "other".into(),
                }
            };
            self.outliving
                .get_or_create(&labels)
                .inc_by(gauge_value(group.count));
        }
        self.children_mismatch
            .get_or_create(&TargetLabels { pid })
            .set(gauge_value(verdicts.children_check.mismatch));
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The address in `--web.listen-address`: what `bind` failed on, said in one line.
pub async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.map_err(|err| {
        anyhow::anyhow!(
            "cannot listen on {address} for metrics: {err}; pick another address with --web.listen-address"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_per_target_series() {
        let metrics = Metrics::default();
        let target = metrics.add_target(42, "/srv/app", "go1.25.5");
        target.set_counts(Counts { user: 7, system: 3 });
        target.created.inc_by(9);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"ctxleak_goroutines{pid="42",kind="user"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ctxleak_goroutines{pid="42",kind="system"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ctxleak_goroutines_created_total{pid="42"} 9"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ctxleak_target_info{pid="42",exe="/srv/app",go_version="go1.25.5"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("ctxleak_events_lost_total 0"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
