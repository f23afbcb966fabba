//! `ctxleak attach --pid N`: watch one Go process until it exits or ctxleak is interrupted.
//!
//! Order matters for exactness: probes are attached first, then the live set is seeded from
//! the target's memory; events that raced with the snapshot are reconciled by the tracker.
//! Every `census_interval` a census of all goroutines (states, stacks, creation sites) is
//! read from memory, grouped, and served as metrics and JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ctxleak_common::Counter;
use tokio::signal::unix::{SignalKind, signal};

use crate::api::{GroupsResponse, LeaksResponse};
use crate::census;
use crate::contexts::{self, ContextTracker, History};
use crate::goexe::GoBinary;
use crate::groups::{GoroutinesResponse, GroupTracker, SuspectRules, Symbolizer};
use crate::http::{Latest, Shared};
use crate::metrics::{self, TargetMetrics};
use crate::probes::{self, EventStream, ProbeMode, Probes, Record};
use crate::procmem::{self, ProcessMemory};
use crate::target::{self, ProcessHandle, TargetError, TargetExe};
use crate::tracker::{GoroutineKind, GoroutineTracker, kind_of_function};

/// How often the event ring is drained without a wakeup from the probes.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

pub struct AttachOptions {
    pub pid: u32,
    pub listen: SocketAddr,
    /// Print a one-line summary every second.
    pub summary: bool,
    /// Size of the probe event ring buffer in bytes.
    pub ring_bytes: u32,
    /// How often the goroutine census runs.
    pub census_interval: Duration,
    pub probe_mode: ProbeMode,
    pub suspect_rules: SuspectRules,
    /// A goroutine outliving its context is reported once the context was cancelled this long.
    pub context_grace: Duration,
    /// Watch this long, take a last census and end (`ctxleak report`); None: until the
    /// target exits or ctxleak is interrupted.
    pub watch_for: Option<Duration>,
}

/// Why the session ended (all are normal ends).
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    Interrupted,
    TargetExited,
    /// `watch_for` elapsed.
    Watched,
}

/// How a session ended, and its last context verdicts (None if no census ran).
pub struct Outcome {
    pub ending: Ending,
    pub leaks: Option<LeaksResponse>,
    pub groups: Option<GroupsResponse>,
}

pub async fn run(options: AttachOptions) -> anyhow::Result<Outcome> {
    let pid = options.pid;
    let process = ProcessHandle::open(pid)?;
    target::check_privileges(pid)?;
    // Bound before anything touches the target, so a busy address fails without attaching.
    let listener = metrics::bind(options.listen).await?;
    let exe = TargetExe::open(pid).map_err(|error| process.explain(error))?;
    let memory = ProcessMemory::open(pid).map_err(|error| {
        process.explain(match error.io_error().map(std::io::Error::kind) {
            Some(std::io::ErrorKind::PermissionDenied) => TargetError::Privileges {
                action: format!("read the memory of PID {pid}"),
            },
            _ => TargetError::Io {
                pid,
                source: std::io::Error::other(error.to_string()),
            },
        })
    })?;
    let binary = &exe.binary;
    let bias = if binary.is_pie {
        let first = binary.first_segment_address().unwrap_or(0);
        procmem::load_bias(pid, &exe.link, first).map_err(|error| {
            process.explain(TargetError::Io {
                pid,
                source: std::io::Error::other(error.to_string()),
            })
        })?
    } else {
        0
    };

    let (mut probes, mut events) = Probes::load(options.ring_bytes).map_err(|error| {
        if error.is_permission_denied() {
            anyhow::Error::new(TargetError::Privileges {
                action: "load eBPF programs".into(),
            })
        } else {
            anyhow::Error::new(error)
        }
    })?;
    probes
        .watch(pid, &exe.link, binary, options.probe_mode)
        .map_err(|error| {
            if matches!(
                process.explain(TargetError::NoSuchProcess { pid }),
                TargetError::ExitedDuringAttach { .. }
            ) {
                anyhow::Error::new(TargetError::ExitedDuringAttach { pid })
            } else {
                anyhow::Error::new(error)
            }
        })?;

    let shared = Arc::new(Shared::default());
    let exe_name = exe.path.display().to_string();
    let target_metrics = shared
        .metrics
        .add_target(pid, &exe_name, &binary.version.raw);
    let listen = listener.local_addr().unwrap_or(options.listen);
    tokio::spawn(crate::http::serve(listener, shared.clone()));

    let session = Session {
        process: &process,
        memory: &memory,
        binary,
        bias,
        allgs: binary.allgs.wrapping_add(bias),
        probes: &probes,
        shared: &shared,
        exe: exe_name,
        target_metrics,
        tracker: GoroutineTracker::default(),
        contexts: ContextTracker::default(),
        contexts_probed: binary.probes.contexts.is_some()
            && !options.probe_mode.no_contexts
            && !options.probe_mode.floor,
        context_grace: options.context_grace,
        context_window: options.suspect_rules.window_short,
        context_history: History::default(),
        context_summary: None,
        last_report: String::new(),
        summary: options.summary,
        symbolizer: Symbolizer::new(binary, bias),
        groups: GroupTracker::new(options.suspect_rules),
        top_suspect: None,
        lost_seen: 0,
        read_errors_seen: 0,
    };
    let context_probes = if session.contexts_probed { 3 } else { 0 };
    let attached = format!(
        "ctxleak: attached to PID {pid} ({}, {}, {} probes{}); metrics at http://{listen}/metrics",
        exe.path.display(),
        binary.version,
        binary.probes.goroutine_created.len()
            + 1
            + usize::from(options.probe_mode.park_times)
            + context_probes,
        if session.contexts_probed {
            ", contexts"
        } else if binary.probes.contexts.is_none() {
            ", no context package"
        } else {
            ""
        },
    );
    let ending = session
        .run(
            &mut events,
            options.summary,
            options.census_interval,
            options.watch_for,
            &attached,
        )
        .await?;
    drop(probes); // Detaches every uprobe.
    match ending {
        Ending::Interrupted | Ending::Watched => {
            eprintln!("ctxleak: detached from PID {pid}; it keeps running")
        }
        Ending::TargetExited => eprintln!("ctxleak: PID {pid} exited; detached"),
    }
    let latest = shared.latest.read().ok().and_then(|latest| latest.clone());
    Ok(Outcome {
        ending,
        leaks: latest.as_ref().map(|latest| latest.leaks.clone()),
        groups: latest.map(|latest| latest.groups.clone()),
    })
}

struct Session<'a> {
    process: &'a ProcessHandle,
    memory: &'a ProcessMemory,
    binary: &'a GoBinary,
    bias: u64,
    allgs: u64,
    probes: &'a Probes,
    shared: &'a Shared,
    exe: String,
    target_metrics: TargetMetrics,
    tracker: GoroutineTracker,
    contexts: ContextTracker,
    contexts_probed: bool,
    context_grace: Duration,
    context_window: Duration,
    context_history: History,
    /// " | contexts: ..." for the summary line, from the last census.
    context_summary: Option<String>,
    /// The last leak report printed, to print only changes.
    last_report: String,
    /// Print the per-second summary and leak reports.
    summary: bool,
    symbolizer: Symbolizer<'a>,
    groups: GroupTracker,
    /// " | leak suspect #1: ..." for the summary line, from the last census.
    top_suspect: Option<String>,
    lost_seen: u64,
    read_errors_seen: u64,
}

impl Session<'_> {
    /// Seeds the live set, says `attached` (only then: a target that exits before the seed is
    /// an attach that failed, reported in one line), and watches until the end.
    async fn run(
        mut self,
        events: &mut EventStream,
        summary: bool,
        census_interval: Duration,
        watch_for: Option<Duration>,
        attached: &str,
    ) -> anyhow::Result<Ending> {
        if let Err(error) = self.resync() {
            let pid = self.process.pid();
            if let exited @ TargetError::ExitedDuringAttach { .. } =
                self.process.explain(TargetError::NoSuchProcess { pid })
            {
                return Err(exited.into());
            }
            return Err(error);
        }
        eprintln!("{attached}");
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The probes wake ctxleak only when the ring fills up (a wakeup per event costs the
        // target more than the probe itself): drain it on a short timer too.
        let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut census_tick = tokio::time::interval(census_interval);
        census_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = (self.tracker.created, self.tracker.exited);
        // Far enough to never come when there is no limit.
        let watched = tokio::time::sleep(watch_for.unwrap_or(Duration::from_secs(86_400 * 365)));
        tokio::pin!(watched);
        loop {
            tokio::select! {
                ready = events.readable_mut() => {
                    let mut guard = ready.context("cannot poll the event ring buffer")?;
                    self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                }
                _ = drain_tick.tick() => self.drain(events.get_mut()),
                _ = tick.tick() => {
                    self.check_kernel_counters();
                    if summary {
                        self.print_summary(last);
                        last = (self.tracker.created, self.tracker.exited);
                    }
                }
                _ = census_tick.tick() => {
                    if let Err(error) = self.census(events.get_mut()) {
                        tracing::warn!("census failed: {error:#}");
                    }
                }
                _ = self.process.exited() => return Ok(Ending::TargetExited),
                () = &mut watched => {
                    self.census(events.get_mut())?;
                    return Ok(Ending::Watched);
                }
                _ = interrupt.recv() => return Ok(Ending::Interrupted),
                _ = terminate.recv() => return Ok(Ending::Interrupted),
            }
        }
    }

    fn classify(binary: &GoBinary, bias: u64, startpc: u64) -> GoroutineKind {
        kind_of_function(
            binary
                .function_name_at(startpc.wrapping_sub(bias))
                .as_deref(),
        )
    }

    fn drain(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) {
        let (binary, bias, pid) = (self.binary, self.bias, self.process.pid());
        let (before_created, before_exited) = (self.tracker.created, self.tracker.exited);
        let (contexts_created, contexts_cancelled) =
            (self.contexts.created, self.contexts.cancelled);
        while let Some(item) = ring.next() {
            match probes::decode_record(&item) {
                Some(Record::Goroutine(event)) if event.pid == pid => {
                    self.tracker
                        .apply(&event, |startpc| Self::classify(binary, bias, startpc));
                    self.contexts.apply_goroutine(&event);
                }
                Some(Record::Context(event)) if event.pid == pid => {
                    let symbolizer = &mut self.symbolizer;
                    self.contexts
                        .apply(&event, |stack| symbolizer.context_site(stack));
                }
                _ => {}
            }
        }
        self.target_metrics
            .contexts_created
            .inc_by(self.contexts.created - contexts_created);
        self.target_metrics
            .contexts_cancelled
            .inc_by(self.contexts.cancelled - contexts_cancelled);
        self.target_metrics
            .created
            .inc_by(self.tracker.created - before_created);
        self.target_metrics
            .exited
            .inc_by(self.tracker.exited - before_exited);
        self.target_metrics.set_counts(self.tracker.counts());
    }

    /// Rebuilds the live set from `runtime.allgs`.
    fn resync(&mut self) -> anyhow::Result<()> {
        let ktime = monotonic_ns();
        let census = census::take(self.memory, &self.binary.g_layout, self.allgs)
            .with_context(|| format!("cannot read the goroutines of PID {}", self.process.pid()))?;
        if census.unreadable > 0 {
            tracing::debug!(
                unreadable = census.unreadable,
                "some g structs could not be read"
            );
        }
        let (binary, bias) = (self.binary, self.bias);
        self.tracker.reset(ktime, &census.goroutines, |startpc| {
            Self::classify(binary, bias, startpc)
        });
        self.target_metrics.set_counts(self.tracker.counts());
        Ok(())
    }

    /// Reads every goroutine from memory, reconciles the event-driven count with it,
    /// symbolizes and groups them, and publishes the result.
    fn census(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> anyhow::Result<()> {
        let pid = self.process.pid();
        let started = std::time::Instant::now();
        let ktime = monotonic_ns();
        let census = census::take(self.memory, &self.binary.g_layout, self.allgs)
            .with_context(|| format!("cannot read the goroutines of PID {pid}"))?;
        // Every event up to now first, so that only real misses disagree.
        self.drain(ring);
        let (binary, bias) = (self.binary, self.bias);
        let disagreements = self
            .tracker
            .reconcile(ktime, &census.goroutines, |startpc| {
                Self::classify(binary, bias, startpc)
            });
        if disagreements > 0 {
            tracing::warn!(
                disagreements,
                "the census found goroutines the probe events missed; repaired"
            );
            self.target_metrics.disagreements.inc_by(disagreements);
            self.target_metrics.set_counts(self.tracker.counts());
        }
        let mut views = crate::groups::symbolize_census(&census, self.memory, &mut self.symbolizer);
        let parks = self.probes.park_times(pid);
        if !parks.is_empty() {
            let now = monotonic_ns();
            for view in views.iter_mut().filter(|view| view.state == "waiting") {
                if let Some(&parked) = parks.get(&view.goid) {
                    view.parked_for_s = Some(now.saturating_sub(parked) as f64 / 1e9);
                }
            }
        }
        let leaks = self.context_verdicts(ktime, started, &views);
        let groups = self.groups.update(started, &views);
        self.shared.metrics.set_census(pid, &groups);
        self.top_suspect = groups.iter().find(|group| group.rank == 1).map(|group| {
            format!(
                " | leak suspect #1: {}",
                crate::report::suspect_summary(group)
            )
        });
        let taken_at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let user = views.iter().filter(|g| !g.system).count() as u64;
        let profile = crate::pprof::goroutine_profile(
            &crate::groups::profile_samples(&views),
            i64::try_from(taken_at_unix_ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
            None,
        );
        self.shared.publish(Latest {
            profile,
            groups: GroupsResponse {
                pid,
                exe: self.exe.clone(),
                go_version: self.binary.version.raw.clone(),
                taken_at_unix_ms,
                goroutines_user: user,
                goroutines_system: views.len() as u64 - user,
                groups,
            },
            goroutines: GoroutinesResponse {
                pid,
                taken_at_unix_ms,
                goroutines: views,
            },
            leaks: LeaksResponse {
                taken_at_unix_ms,
                ..leaks
            },
        });
        tracing::debug!(
            goroutines = census.goroutines.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "census"
        );
        Ok(())
    }

    /// Judges the contexts against this census, publishes the metrics and returns the report
    /// (its time stamp still to be set).
    fn context_verdicts(
        &mut self,
        ktime: u64,
        started: std::time::Instant,
        views: &[crate::groups::GoroutineView],
    ) -> LeaksResponse {
        let tracker = &self.tracker;
        // Goroutines whose exit event was lost keep no binding.
        self.contexts
            .retain_goroutines(|goid| tracker.is_live(goid));
        let by_goid: std::collections::HashMap<u64, &crate::groups::GoroutineView> =
            views.iter().map(|view| (view.goid, view)).collect();
        let memory = self.memory;
        let verdicts = contexts::verdicts(
            &self.contexts,
            &mut self.context_history,
            &contexts::Inputs {
                now_ns: ktime,
                grace_ns: u64::try_from(self.context_grace.as_nanos()).unwrap_or(u64::MAX),
                now: started,
                window: self.context_window,
                is_live: &|goid| tracker.is_live(goid),
                views: &by_goid,
                read_len: &|map| memory.read_u64(map).ok(),
                is_program_function: &|name| self.binary.is_program_function(name),
            },
        );
        let pid = self.process.pid();
        self.shared.metrics.set_contexts(pid, &verdicts);
        let unreleased: u64 = verdicts.unreleased.iter().map(|u| u.count).sum();
        let outliving: u64 = verdicts.outliving.iter().map(|o| o.count).sum();
        self.context_summary = (unreleased + outliving > 0).then(|| {
            let top = verdicts
                .unreleased
                .first()
                .and_then(|u| u.site.as_ref())
                .map(|site| format!(", most at {}", crate::report::short_site(site)))
                .unwrap_or_default();
            format!(
                " | contexts: {unreleased} unreleased{top}; {outliving} goroutines outlived theirs"
            )
        });
        let report = leak_report_text(&verdicts);
        if report != self.last_report {
            if !report.is_empty() && self.summary {
                println!("{report}");
            }
            self.last_report = report;
        }
        let (tracked, bound) = self.contexts.sizes();
        LeaksResponse {
            pid,
            exe: self.exe.clone(),
            go_version: self.binary.version.raw.clone(),
            taken_at_unix_ms: 0,
            contexts_probed: self.contexts_probed,
            grace_s: self.context_grace.as_secs_f64(),
            unreleased: verdicts.unreleased,
            outliving: verdicts.outliving,
            children_check: verdicts.children_check,
            contexts_created: self.contexts.created,
            contexts_cancelled: self.contexts.cancelled,
            contexts_tracked: tracked as u64,
            goroutines_bound: bound as u64,
        }
    }

    /// Lost events mean the live set is no longer exact: count them and read it afresh.
    fn check_kernel_counters(&mut self) {
        let read_errors = self.probes.counter(Counter::ReadErrors);
        self.shared
            .metrics
            .probe_read_errors
            .inc_by(read_errors.saturating_sub(self.read_errors_seen));
        self.read_errors_seen = self.read_errors_seen.max(read_errors);
        let lost = self.probes.counter(Counter::EventsLost);
        if lost > self.lost_seen {
            self.shared
                .metrics
                .events_lost
                .inc_by(lost - self.lost_seen);
            tracing::warn!(
                lost = lost - self.lost_seen,
                "probe events lost (ring buffer full); resynchronising from memory"
            );
            self.lost_seen = lost;
            self.target_metrics.resyncs.inc();
            if let Err(error) = self.resync() {
                tracing::warn!("resync failed: {error:#}");
            }
        }
    }

    fn print_summary(&self, (created_before, exited_before): (u64, u64)) {
        let counts = self.tracker.counts();
        println!(
            "ctxleak: PID {} {}: {} goroutines ({} system) | +{} created -{} exited /s | {} events lost{}{}",
            self.process.pid(),
            self.binary.version,
            counts.user,
            counts.system,
            self.tracker.created - created_before,
            self.tracker.exited - exited_before,
            self.lost_seen,
            self.top_suspect.as_deref().unwrap_or_default(),
            self.context_summary.as_deref().unwrap_or_default(),
        );
    }
}

/// The context verdicts as text, one line each; empty when there are none.
fn leak_report_text(verdicts: &contexts::Verdicts) -> String {
    let lines = crate::report::context_lines(
        &verdicts.unreleased,
        &verdicts.outliving,
        verdicts.children_check.mismatch,
    );
    if lines.is_empty() {
        return String::new();
    }
    format!("ctxleak: context leak report\n{}", lines.join("\n"))
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}
