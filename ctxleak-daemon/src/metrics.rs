//! ctxleak's Prometheus metrics (OpenMetrics text) and the HTTP endpoint that serves them.

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
struct ProbeLabels {
    /// The eBPF program: goroutine_created, context_cancelled, ...
    probe: &'static str,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StuckLabels {
    pid: u32,
    created_by: String,
    blocked_at: String,
    wait_reason: String,
}

/// At most this many suspect groups (and as many groups with stuck goroutines) get their own
/// series: enough for an alert and a dashboard table, bounded whatever the target does.
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
    /// The container's id from the cgroup path ("" outside containers; Prometheus drops
    /// empty labels).
    container_id: String,
    /// The Kubernetes pod UID from the cgroup path ("" outside Kubernetes).
    pod_uid: String,
}

/// What `ctxleak_target_info` says of a watched process.
#[derive(Clone, Debug, Default)]
pub struct TargetInfo {
    pub exe: String,
    pub go_version: String,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// The series of one target whose label sets change from census to census: remembered so
/// that they can be replaced, or removed when the target goes away, without touching other
/// targets' series.
#[derive(Default)]
struct TargetSeries {
    info: Option<TargetInfoLabels>,
    states: Vec<StateLabels>,
    suspects: Vec<SuspectLabels>,
    stuck: Vec<StuckLabels>,
    unreleased: Vec<ContextSiteLabels>,
    orphaned: Vec<ContextSiteLabels>,
    listeners: Vec<ContextSiteLabels>,
    outliving: Vec<OutlivingLabels>,
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
    stuck: Family<StuckLabels, Gauge>,
    contexts_created: Family<TargetLabels, Counter>,
    contexts_cancelled: Family<TargetLabels, Counter>,
    unreleased: Family<ContextSiteLabels, Gauge>,
    orphaned: Family<ContextSiteLabels, Gauge>,
    listeners: Family<ContextSiteLabels, Gauge>,
    outliving: Family<OutlivingLabels, Gauge>,
    children_mismatch: Family<TargetLabels, Gauge>,
    probe_duty: Family<TargetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    probe_coverage: Family<TargetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    probe_cost: Family<TargetLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    probe_cost_ratio: Family<TargetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    probe_budget: Family<TargetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    series: std::sync::Mutex<std::collections::HashMap<u32, TargetSeries>>,
    pub events_lost: Counter,
    pub probe_read_errors: Counter,
    /// Processes watched now.
    pub targets: Gauge,
    /// Executable files with probes attached now (one per file, shared by its processes).
    pub attached_executables: Gauge,
    /// Go processes ctxleak tried to watch and could not (each is logged with the reason).
    pub attach_failures: Counter,
    /// Exec notifications lost (each triggers a rescan of /proc).
    pub exec_events_lost: Counter,
    /// What the budget takes one probe hit to cost (see [`crate::calibrate`]).
    pub probe_hit_cost: Gauge<f64, std::sync::atomic::AtomicU64>,
    probe_runs: Family<ProbeLabels, Counter>,
    probe_run_seconds: Family<ProbeLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
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
            stuck: Family::default(),
            contexts_created: Family::default(),
            contexts_cancelled: Family::default(),
            unreleased: Family::default(),
            orphaned: Family::default(),
            listeners: Family::default(),
            outliving: Family::default(),
            children_mismatch: Family::default(),
            probe_duty: Family::default(),
            probe_coverage: Family::default(),
            probe_cost: Family::default(),
            probe_cost_ratio: Family::default(),
            probe_budget: Family::default(),
            series: Default::default(),
            events_lost: Counter::default(),
            probe_read_errors: Counter::default(),
            targets: Gauge::default(),
            attached_executables: Gauge::default(),
            attach_failures: Counter::default(),
            exec_events_lost: Counter::default(),
            probe_hit_cost: Gauge::default(),
            probe_runs: Family::default(),
            probe_run_seconds: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "targets",
            "Go processes ctxleak watches now",
            metrics.targets.clone(),
        );
        registry.register(
            "attached_executables",
            "Executable files with ctxleak's probes attached now: one per file, shared by every watched process running it",
            metrics.attached_executables.clone(),
        );
        registry.register(
            "attach_failures",
            "Go processes ctxleak tried to watch and could not (the daemon logs each with its reason)",
            metrics.attach_failures.clone(),
        );
        registry.register(
            "exec_events_lost",
            "Exec notifications dropped because their ring buffer was full (each triggers a rescan of /proc)",
            metrics.exec_events_lost.clone(),
        );
        registry.register(
            "probe_hit_cost_seconds",
            "Under --max-overhead: what one probe hit costs a busy process by ctxleak's estimate: the cost measured by its benchmarks, scaled by how fast this host traps (measured at start); sparse hits are charged up to 2.5 times that",
            metrics.probe_hit_cost.clone(),
        );
        registry.register(
            "probe_runs",
            "Times each eBPF program ran (with --probe-stats only): hits of its uprobe in every process running the watched executables",
            metrics.probe_runs.clone(),
        );
        registry.register(
            "probe_run_seconds",
            "Time each eBPF program ran (with --probe-stats only), spent on the CPU of the process that hit the probe; the kernel's trap around it is not counted",
            metrics.probe_run_seconds.clone(),
        );
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
            "stuck_goroutines",
            "Goroutines stuck: blocked at a line of the program on a lock, WaitGroup, Cond or channel send (or a nil channel, an empty select) without running for at least --stuck-after, by site; the longest stuck groups only",
            metrics.stuck.clone(),
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
            "context_listeners",
            "Goroutines parked on the Done() channel of unreleased contexts (handed the context, they wait for a cancellation that has not come), by the contexts' creation site",
            metrics.listeners.clone(),
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
            "probe_duty_ratio",
            "Share of the last minute the probes were attached to a watched process (1 with --exact, 0 with --max-overhead 0): the share of its probe events ctxleak saw; figures from events are samples when it is below 1",
            metrics.probe_duty.clone(),
        );
        registry.register(
            "probe_coverage_ratio",
            "Share of the time since ctxleak attached that the probes were attached to a watched process: sampled context counts are about this share of the totals (divide by it for an estimate)",
            metrics.probe_coverage.clone(),
        );
        registry.register(
            "probe_cost_seconds",
            "Estimated CPU time the probes cost a watched process: its probe hits (the events received) times the cost of one hit (the trap and the program)",
            metrics.probe_cost.clone(),
        );
        registry.register(
            "probe_cost_ratio",
            "Under --max-overhead: the share of one CPU the probes cost a watched process over the last minute, by the estimate; compare with ctxleak_probe_budget_ratio",
            metrics.probe_cost_ratio.clone(),
        );
        registry.register(
            "probe_budget_ratio",
            "The CPU share the probes may cost each watched process (--max-overhead, as a fraction of one CPU); absent with --exact",
            metrics.probe_budget.clone(),
        );
        registry.register(
            "target_info",
            "A watched process (always 1): its executable, Go version, and the container id and Kubernetes pod UID from its cgroup",
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
    /// `ctxleak_probe_duty_ratio`.
    pub probe_duty: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `ctxleak_probe_coverage_ratio`.
    pub probe_coverage: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `ctxleak_probe_cost_seconds_total`.
    pub probe_cost: Counter<f64, std::sync::atomic::AtomicU64>,
    /// `ctxleak_probe_cost_ratio`.
    pub probe_cost_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `ctxleak_probe_budget_ratio`: set only under a budget.
    pub probe_budget: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// To create `probe_budget` only under a budget (the family holds the series).
    pid: u32,
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
    pub fn add_target(&self, pid: u32, info: &TargetInfo) -> TargetMetrics {
        let labels = TargetInfoLabels {
            pid,
            exe: info.exe.clone(),
            go_version: info.go_version.clone(),
            container_id: info.container_id.clone().unwrap_or_default(),
            pod_uid: info.pod_uid.clone().unwrap_or_default(),
        };
        self.target_info.get_or_create(&labels).set(1);
        self.with_series(pid, |series| series.info = Some(labels));
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
            probe_duty: self.probe_duty.get_or_create(&target).clone(),
            probe_coverage: self.probe_coverage.get_or_create(&target).clone(),
            probe_cost: self.probe_cost.get_or_create(&target).clone(),
            probe_cost_ratio: self.probe_cost_ratio.get_or_create(&target).clone(),
            probe_budget: Gauge::default(),
            pid,
        }
    }

    /// Exports the probe budget of `target` (`ctxleak_probe_budget_ratio`).
    pub fn set_probe_budget(&self, target: &mut TargetMetrics, share: f64) {
        target.probe_budget = self
            .probe_budget
            .get_or_create(&TargetLabels { pid: target.pid })
            .clone();
        target.probe_budget.set(share);
    }

    /// Removes every series of `pid`: it is no longer watched.
    pub fn remove_target(&self, pid: u32) {
        let series = self
            .series
            .lock()
            .ok()
            .and_then(|mut all| all.remove(&pid))
            .unwrap_or_default();
        if let Some(info) = &series.info {
            self.target_info.remove(info);
        }
        self.remove_census(&series);
        self.remove_contexts(&series);
        for kind in ["user", "system"] {
            self.goroutines.remove(&GoroutineLabels { pid, kind });
        }
        let target = TargetLabels { pid };
        for family in [
            &self.created,
            &self.exited,
            &self.resyncs,
            &self.disagreements,
            &self.contexts_created,
            &self.contexts_cancelled,
        ] {
            family.remove(&target);
        }
        self.suspect_count.remove(&target);
        self.children_mismatch.remove(&target);
        self.probe_duty.remove(&target);
        self.probe_coverage.remove(&target);
        self.probe_cost.remove(&target);
        self.probe_cost_ratio.remove(&target);
        self.probe_budget.remove(&target);
    }

    fn with_series<T>(&self, pid: u32, f: impl FnOnce(&mut TargetSeries) -> T) -> Option<T> {
        let mut all = self.series.lock().ok()?;
        Some(f(all.entry(pid).or_default()))
    }

    fn remove_census(&self, series: &TargetSeries) {
        for labels in &series.states {
            self.by_state.remove(labels);
        }
        for labels in &series.suspects {
            self.suspects.remove(labels);
        }
        for labels in &series.stuck {
            self.stuck.remove(labels);
        }
    }

    fn remove_contexts(&self, series: &TargetSeries) {
        for labels in &series.unreleased {
            self.unreleased.remove(labels);
        }
        for labels in &series.orphaned {
            self.orphaned.remove(labels);
        }
        for labels in &series.listeners {
            self.listeners.remove(labels);
        }
        for labels in &series.outliving {
            self.outliving.remove(labels);
        }
    }

    /// Replaces the census-derived series of `pid` with those of `groups` (user goroutines).
    pub fn set_census(&self, pid: u32, groups: &[crate::api::Group]) {
        // Series of states and suspects that went away must disappear, so start afresh (this
        // target's only).
        let mut fresh = TargetSeries::default();
        if let Some(old) = self.with_series(pid, std::mem::take) {
            self.remove_census(&old);
            fresh = TargetSeries {
                states: Vec::new(),
                suspects: Vec::new(),
                stuck: Vec::new(),
                ..old
            };
        }
        for group in groups {
            let labels = StateLabels {
                pid,
                state: group.state.clone(),
                wait_reason: group.wait_reason.clone(),
            };
            self.by_state
                .get_or_create(&labels)
                .inc_by(i64::try_from(group.count).unwrap_or(i64::MAX));
            fresh.states.push(labels);
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
            fresh.suspects.push(labels);
        }
        self.suspect_count
            .get_or_create(&TargetLabels { pid })
            .set(i64::try_from(suspects.len()).unwrap_or(i64::MAX));
        for group in crate::groups::stuck_groups(groups)
            .iter()
            .take(MAX_SUSPECT_SERIES)
        {
            let labels = StuckLabels {
                pid,
                created_by: location(&group.created_by),
                blocked_at: location(&group.blocked_at),
                wait_reason: group.wait_reason.clone(),
            };
            self.stuck
                .get_or_create(&labels)
                .set(i64::try_from(group.stuck).unwrap_or(i64::MAX));
            fresh.stuck.push(labels);
        }
        self.with_series(pid, |series| *series = fresh);
    }

    /// Replaces the context verdict series of `pid`.
    pub fn set_contexts(&self, pid: u32, verdicts: &crate::contexts::Verdicts) {
        let mut fresh = TargetSeries::default();
        if let Some(old) = self.with_series(pid, std::mem::take) {
            self.remove_contexts(&old);
            fresh = TargetSeries {
                unreleased: Vec::new(),
                orphaned: Vec::new(),
                listeners: Vec::new(),
                outliving: Vec::new(),
                ..old
            };
        }
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
                fresh.orphaned.push(labels.clone());
            }
            let listening: u64 = group.listeners.iter().map(|l| l.count).sum();
            if listening > 0 {
                self.listeners
                    .get_or_create(&labels)
                    .inc_by(gauge_value(listening));
                fresh.listeners.push(labels.clone());
            }
            fresh.unreleased.push(labels);
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
            fresh.outliving.push(labels);
        }
        self.children_mismatch
            .get_or_create(&TargetLabels { pid })
            .set(gauge_value(verdicts.children_check.mismatch));
        self.with_series(pid, |series| *series = fresh);
    }

    /// Adds runs and run time (seconds) of one eBPF program since the last call.
    pub fn add_probe_runs(&self, probe: &'static str, runs: u64, seconds: f64) {
        let labels = ProbeLabels { probe };
        self.probe_runs.get_or_create(&labels).inc_by(runs);
        self.probe_run_seconds
            .get_or_create(&labels)
            .inc_by(seconds);
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Listens on the `--web.listen-address`; what failed is said in one line.
pub async fn bind(
    address: &crate::config::ListenAddress,
) -> anyhow::Result<tokio::net::TcpListener> {
    address.bind().await.map_err(|err| {
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
        let target = metrics.add_target(
            42,
            &TargetInfo {
                exe: "/srv/app".into(),
                go_version: "go1.25.5".into(),
                container_id: Some("c0ffee".into()),
                pod_uid: None,
            },
        );
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
                r#"ctxleak_target_info{pid="42",exe="/srv/app",go_version="go1.25.5",container_id="c0ffee",pod_uid=""} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("ctxleak_events_lost_total 0"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        metrics.remove_target(42);
        let text = metrics.encode().unwrap();
        assert!(!text.contains(r#"pid="42""#), "{text}");
    }
}
