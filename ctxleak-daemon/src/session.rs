//! One watched Go process: its goroutine and context trackers, fed by probe events and
//! checked against a census of its memory, and what it publishes (metrics, JSON, profile).
//!
//! A session owns nothing shared with other targets but the executable's parsed
//! [`GoBinary`]; the probes, the event ring and the HTTP state belong to the
//! [`Watcher`](crate::watcher::Watcher) that routes events to it by PID.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ctxleak_common::{ContextEvent, GoroutineEvent};

use crate::api::{GroupsResponse, LeaksResponse};
use crate::census;
use crate::contexts::{self, ContextTracker, History};
use crate::gcount::GcountReader;
use crate::goexe::GoBinary;
use crate::groups::{GoroutineList, GoroutinesResponse, GroupTracker, SuspectRules, Symbolizer};
use crate::http::{Latest, Shared};
use crate::metrics::{TargetInfo, TargetMetrics};
use crate::procmem::ProcessMemory;
use crate::tracker::{Counts, GoroutineTracker, kind_of_start};

/// How every session judges its target: the same for all targets of one ctxleak.
#[derive(Clone, Copy, Debug)]
pub struct Judgement {
    pub suspect_rules: SuspectRules,
    /// A goroutine outliving its context is reported once the context was cancelled this long.
    pub context_grace: Duration,
}

pub struct Session {
    pid: u32,
    /// To tell a process that is exiting from a failure worth a warning.
    process: crate::target::ProcessHandle,
    memory: ProcessMemory,
    binary: Arc<GoBinary>,
    bias: u64,
    allgs: u64,
    info: TargetInfo,
    target_metrics: TargetMetrics,
    tracker: GoroutineTracker,
    contexts: ContextTracker,
    contexts_probed: bool,
    judgement: Judgement,
    context_history: History,
    /// " | contexts: ..." for the summary line, from the last census.
    context_summary: Option<String>,
    /// The last leak report, to print only changes.
    last_report: String,
    /// The findings of the last census by what they are about (kind and sites, not counts),
    /// to log only those that appear or go away.
    findings: std::collections::BTreeSet<String>,
    symbolizer: Symbolizer,
    /// Who listens on which context, from the last census (see [`crate::listeners`]).
    listeners: crate::listeners::Listeners,
    /// The channels stuck groups wait on (see [`crate::chans`]).
    channels: crate::chans::ChannelWatch,
    groups: GroupTracker,
    /// " | leak suspect #1: ... | stuck: ..." for the summary line, from the last census.
    top_suspect: Option<String>,
    /// (created, exited) at the last summary line.
    summarized: (u64, u64),
    /// The probes were off at some time since the live set was last read from memory: the
    /// events alone no longer keep it, [`Session::count_from_memory`] does.
    events_gap: bool,
    /// The probes were off at some time since the tracked contexts were last checked in
    /// memory: cancellations may have been missed.
    contexts_gap: bool,
    /// Cancellations come from memory only (the default; `--cancel-probe` probes them instead).
    releases_from_memory: bool,
    /// When [`Session::check_releases`] may read the tracked contexts again.
    next_release_check: Instant,
    /// Events applied since [`Session::take_hits`]: one per probe hit.
    hits: u64,
    /// When [`Session::count_from_memory`] may read the goroutines again.
    next_memory_count: Instant,
    /// The runtime's own count of its goroutines, read while the probes are off (None: its
    /// inputs could not be found in the executable; then every read is a scan of `allgs`).
    gcount: Option<GcountReader>,
    /// g's that `sched.ngsys` counts and a census does not: in cgo programs, the dead g of
    /// each extra M (for C threads calling Go). Learnt whenever an exact count is at hand.
    uncounted_system: u64,
    /// What `/api/leaks` says of the probes; `on`: whether its executable's probes are
    /// attached now (see [`crate::budget`]).
    probe_state: crate::api::ProbeState,
    /// For `probe_state.coverage`: since when the process is watched, how long the probes
    /// were on before their last switch off, and since when they are on (None: off).
    watched_since: Instant,
    probes_on_for: Duration,
    probes_on_since: Option<Instant>,
}

/// The shortest gap between two reads of a target's memory that the watcher's once-a-second
/// tick asks for: a little under a second, so that a tick that fires a few ms earlier after
/// the last one than the last one did is not turned away (which left the gauge two seconds
/// behind every other second under churn, issue #20).
const EVERY_TICK: Duration = Duration::from_millis(900);

/// A census of at least this many goroutines gives what it freed back to the kernel at once
/// ([`crate::trim::release_free_memory`]). Its records, views and indexes are tens to hundreds
/// of MB, and glibc serves blocks under its (raised) mmap threshold from its heap, where what
/// is freed stays resident: at 1 000 000 goroutines that kept about 25 MB more than the
/// census keeps for itself. A trim takes a few ms; this census took hundreds.
const TRIM_AFTER_CENSUS_OF: usize = 100_000;

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        process: crate::target::ProcessHandle,
        memory: ProcessMemory,
        binary: Arc<GoBinary>,
        bias: u64,
        info: TargetInfo,
        target_metrics: TargetMetrics,
        contexts_probed: bool,
        judgement: Judgement,
        policy: crate::budget::ProbePolicy,
    ) -> Self {
        let allgs = binary.allgs.wrapping_add(bias);
        let gcount = match &binary.sched {
            Ok(sched) => Some(GcountReader::new(process.pid(), sched, allgs, bias)),
            Err(error) => {
                tracing::debug!(
                    pid = process.pid(),
                    "{error}: the goroutines are counted by reading every g while the probes are off"
                );
                None
            }
        };
        Self {
            pid: process.pid(),
            process,
            memory,
            allgs,
            gcount,
            uncounted_system: 0,
            symbolizer: Symbolizer::new(binary.clone(), bias),
            listeners: Default::default(),
            channels: Default::default(),
            binary,
            bias,
            info,
            target_metrics,
            tracker: GoroutineTracker::default(),
            contexts: ContextTracker::default(),
            contexts_probed,
            judgement,
            context_history: History::default(),
            context_summary: None,
            last_report: String::new(),
            findings: Default::default(),
            groups: GroupTracker::new(judgement.suspect_rules),
            top_suspect: None,
            summarized: (0, 0),
            events_gap: false,
            contexts_gap: false,
            releases_from_memory: false,
            next_release_check: Instant::now(),
            hits: 0,
            next_memory_count: Instant::now(),
            watched_since: Instant::now(),
            probes_on_for: Duration::ZERO,
            probes_on_since: Some(Instant::now()),
            probe_state: crate::api::ProbeState {
                max_overhead: policy.to_string(),
                on: true,
                duty: 1.0,
                coverage: 1.0,
                sampled: false,
            },
        }
    }

    /// The share of the last minute its probes were on (the watcher measures it).
    pub fn set_probe_duty(&mut self, duty: f64) {
        self.probe_state.duty = duty;
        self.target_metrics.probe_duty.set(duty);
        let on = self.probes_on_for + self.probes_on_since.map_or(Duration::ZERO, |s| s.elapsed());
        let watched = self.watched_since.elapsed().as_secs_f64();
        self.probe_state.coverage = if watched > 0.0 {
            (on.as_secs_f64() / watched).min(1.0)
        } else {
            1.0
        };
        self.target_metrics
            .probe_coverage
            .set(self.probe_state.coverage);
    }

    /// The probes of its executable were attached (`on`) or detached. Detached, the events
    /// stop: from now on the live set is read from memory, and the tracked contexts are
    /// checked in memory at each census. Attached again, the live set is read afresh at once
    /// (after the attach, as at the first attach) and the events keep it from there.
    pub fn probes_switched(&mut self, on: bool) -> anyhow::Result<()> {
        self.probe_state.on = on;
        if on {
            self.probes_on_since.get_or_insert_with(Instant::now);
        } else if let Some(since) = self.probes_on_since.take() {
            self.probes_on_for += since.elapsed();
        }
        if !on {
            self.probe_state.sampled = true;
            self.events_gap = true;
            self.contexts_gap = true;
            // The events kept the counts exact up to now.
            self.learn_uncounted_system();
            return Ok(());
        }
        self.count_from_memory(Instant::now(), true)
    }

    /// Probe events applied since the last call: the probe hits of this process.
    pub fn take_hits(&mut self) -> u64 {
        std::mem::take(&mut self.hits)
    }

    /// While the probes are off (or as they come back on, `now_due`), reads the goroutine
    /// counts from memory and estimates how many were created and exited since the last read.
    /// Every second, the runtime's own arithmetic ([`crate::gcount`], a few dozen bytes
    /// whatever the number of goroutines; see [`GoroutineTracker::count_estimating`]); as the
    /// probes come back on (the events need the live set to start from), or when the
    /// arithmetic cannot be read, a scan of every g (see
    /// [`GoroutineTracker::reset_estimating`]). Rate-limited so that reading a huge target
    /// takes at most a tenth of the daemon's time: at most every second, and every ten times
    /// as long as the last read took.
    pub fn count_from_memory(&mut self, now: Instant, now_due: bool) -> anyhow::Result<()> {
        if !self.events_gap || (!now_due && now < self.next_memory_count) {
            return Ok(());
        }
        if !now_due && let Some(reader) = &self.gcount {
            match reader.read(&self.memory) {
                Ok(counted) => {
                    let counts = Counts {
                        user: counted.counts.user,
                        system: counted.counts.system.saturating_sub(self.uncounted_system),
                    };
                    self.tracker.count_estimating(counts, counted.goidgen);
                    self.next_memory_count = now + (now.elapsed() * 10).max(EVERY_TICK);
                    self.publish_counts();
                    return Ok(());
                }
                Err(error) => tracing::debug!(pid = self.pid, "{error}; reading every g instead"),
            }
        }
        let ktime = monotonic_ns();
        let census = self.take_census()?;
        let took = now.elapsed();
        self.next_memory_count = now + (took * 10).max(EVERY_TICK);
        self.recount(ktime, &census);
        Ok(())
    }

    /// Reads the tracked contexts' cancellations from memory after a time with the probes
    /// off, at most every second and every ten times as long as the last read took: a
    /// context created in a window is followed to its end (see
    /// [`ContextTracker::check_memory`]).
    pub fn check_releases(&mut self, now: Instant) {
        if !self.releases_unseen() || now < self.next_release_check {
            return;
        }
        let started = Instant::now();
        self.check_contexts_in_memory(monotonic_ns());
        self.next_release_check = now + (started.elapsed() * 10).max(EVERY_TICK);
    }

    /// Whether cancellations of tracked contexts may have been missed.
    fn releases_unseen(&self) -> bool {
        self.contexts_probed && (self.contexts_gap || self.releases_from_memory)
    }

    /// Cancellations are not probed (the default; `--cancel-probe` probes them instead): read them from memory every
    /// second, probes on or off.
    pub fn read_releases_from_memory(&mut self) {
        self.releases_from_memory = true;
    }

    /// The live set from a census read after `ktime`, after a time without (all) events;
    /// the events keep it from here if the probes are on.
    fn recount(&mut self, ktime: u64, census: &census::Census) {
        let (binary, bias) = (&*self.binary, self.bias);
        self.tracker
            .reset_estimating(ktime, &census.goroutines, census.high_goid, |startpc| {
                kind_of_start(binary, bias, startpc)
            });
        self.events_gap = !self.probe_state.on;
        self.publish_counts();
        self.learn_uncounted_system();
    }

    /// Compares the runtime's own count with the tracker's, exact just now (after a census,
    /// or from the events): the system g's the runtime counts beyond it are taken away from
    /// its system count from now on. Not when the user counts differ (the target was creating
    /// or ending goroutines meanwhile).
    fn learn_uncounted_system(&mut self) {
        let Some(counted) = self
            .gcount
            .as_ref()
            .and_then(|reader| reader.read(&self.memory).ok())
        else {
            return;
        };
        let exact = self.tracker.counts();
        if counted.counts.user == exact.user {
            self.uncounted_system = counted.counts.system.saturating_sub(exact.system);
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn metrics(&self) -> &TargetMetrics {
        &self.target_metrics
    }

    pub fn info(&self) -> &TargetInfo {
        &self.info
    }

    /// The first few disagreements, each with what the census knows of the goroutine.
    fn describe(
        binary: &GoBinary,
        bias: u64,
        census_ktime: u64,
        goroutines: &[census::GoroutineRecord],
        disagreements: &[crate::tracker::Disagreement],
    ) -> String {
        use crate::tracker::Disagreement;
        let function = |pc: u64| {
            binary
                .function_name_at(pc.wrapping_sub(bias))
                .map_or_else(|| format!("{pc:#x}"), |name| name.to_string())
        };
        let mut text: Vec<String> = disagreements
            .iter()
            .take(5)
            .map(|disagreement| match *disagreement {
                Disagreement::CreationMissed { goid } => {
                    match goroutines.iter().find(|record| record.goid == goid) {
                        Some(g) => format!(
                            "goroutine {goid} (status {}, runs {}, started by goroutine {} in {}): no creation event",
                            g.status,
                            function(g.startpc),
                            g.parent_goid,
                            function(g.gopc),
                        ),
                        None => format!("goroutine {goid}: no creation event"),
                    }
                }
                Disagreement::ExitMissed {
                    goid,
                    created_ktime: 0,
                } => format!("goroutine {goid} (from a snapshot): gone, no exit event"),
                Disagreement::ExitMissed {
                    goid,
                    created_ktime,
                } => format!(
                    "goroutine {goid} (created {:.3} s before the census): gone, no exit event",
                    census_ktime.saturating_sub(created_ktime) as f64 / 1e9
                ),
            })
            .collect();
        if disagreements.len() > text.len() {
            text.push(format!("and {} more", disagreements.len() - text.len()));
        }
        text.join("; ")
    }

    pub fn apply_goroutine(&mut self, event: &GoroutineEvent) {
        self.hits += 1;
        let (binary, bias) = (&*self.binary, self.bias);
        self.tracker
            .apply(event, |startpc| kind_of_start(binary, bias, startpc));
        self.contexts.apply_goroutine(event);
    }

    /// Applies a context event drained at `received_ns` (monotonic; context events carry no
    /// timestamp of their own).
    pub fn apply_context(&mut self, event: &ContextEvent, received_ns: u64) {
        self.hits += 1;
        let symbolizer = &mut self.symbolizer;
        self.contexts
            .apply(event, received_ns, |stack| symbolizer.context_site(stack));
    }

    /// Brings the metrics up to date with the events applied since the last call.
    pub fn publish_counts(&mut self) {
        let metrics = &self.target_metrics;
        metrics.contexts_created.inc_by(
            self.contexts
                .created
                .saturating_sub(metrics.contexts_created.get()),
        );
        metrics.contexts_cancelled.inc_by(
            self.contexts
                .cancelled
                .saturating_sub(metrics.contexts_cancelled.get()),
        );
        metrics
            .created
            .inc_by(self.tracker.created.saturating_sub(metrics.created.get()));
        metrics
            .exited
            .inc_by(self.tracker.exited.saturating_sub(metrics.exited.get()));
        metrics.set_counts(self.tracker.counts());
    }

    /// Rebuilds the live set from `runtime.allgs` (at attach, and after lost events).
    pub fn resync(&mut self) -> anyhow::Result<()> {
        let ktime = monotonic_ns();
        let census = self.take_census()?;
        if census.unreadable > 0 {
            tracing::debug!(
                pid = self.pid,
                unreadable = census.unreadable,
                "some g structs could not be read"
            );
        }
        let (binary, bias) = (&*self.binary, self.bias);
        self.tracker.reset(ktime, &census.goroutines, |startpc| {
            kind_of_start(binary, bias, startpc)
        });
        self.tracker.saw_goid(census.high_goid);
        self.target_metrics.set_counts(self.tracker.counts());
        Ok(())
    }

    pub fn count_resync(&self) {
        self.target_metrics.resyncs.inc();
    }

    /// Reads every goroutine from memory (the caller has applied every event up to `ktime`
    /// first, so that only real misses disagree), reconciles the event-driven count with it,
    /// symbolizes and groups them, and publishes the result. Returns how the context leak
    /// findings changed.
    pub fn census(
        &mut self,
        census: census::Census,
        ktime: u64,
        started: Instant,
        parks: &std::collections::HashMap<u64, u64>,
        shared: &Shared,
    ) -> LeakChanges {
        let pid = self.pid;
        let disagreements = if self.events_gap {
            // The events missed whatever happened while the probes were off: the census is
            // the count, not a check of it.
            self.recount(ktime, &census);
            Vec::new()
        } else {
            let (binary, bias) = (&*self.binary, self.bias);
            self.tracker
                .reconcile(ktime, &census.goroutines, |startpc| {
                    kind_of_start(binary, bias, startpc)
                })
        };
        if self.releases_unseen() {
            self.check_contexts_in_memory(ktime);
        }
        if !disagreements.is_empty() && self.process.is_exiting() {
            // Its goroutines vanish without exit events when a process ends: not a miss.
            tracing::debug!(
                pid,
                disagreements = disagreements.len(),
                "census of a process that is exiting"
            );
            self.target_metrics.set_counts(self.tracker.counts());
        } else if !disagreements.is_empty() {
            // Which goroutines, and what they are: the cause of such misses is still open
            // (issue #7's note), and this line is what a rare occurrence leaves behind.
            let missed = Self::describe(
                &self.binary,
                self.bias,
                ktime,
                &census.goroutines,
                &disagreements,
            );
            tracing::warn!(
                pid,
                disagreements = disagreements.len(),
                missed,
                "the census found goroutines the probe events missed; repaired"
            );
            self.target_metrics
                .disagreements
                .inc_by(disagreements.len() as u64);
            self.target_metrics.set_counts(self.tracker.counts());
        }
        let mut views =
            crate::groups::symbolize_census(&census, &self.memory, &mut self.symbolizer);
        if !parks.is_empty() {
            let now = monotonic_ns();
            for view in views.iter_mut().filter(|view| view.state == "waiting") {
                if let Some(&parked) = parks.get(&view.goid) {
                    view.parked_for_s = Some(now.saturating_sub(parked) as f64 / 1e9);
                }
            }
        }
        self.groups.runtime_bounds(ktime, &mut views);
        let listeners = self.find_listeners(&census, &mut views, ktime);
        let (leaks, changes) = self.context_verdicts(ktime, started, &views, &listeners, shared);
        let mut groups = self.groups.update(started, &views);
        if let (Ok((waits, _)), Ok((chans, _))) = (&self.binary.waits, &self.binary.chans) {
            let tracker = &self.groups;
            self.channels.update(
                &self.memory,
                (waits, chans),
                (started, tracker.rules().stuck_after),
                &mut groups,
                &census.goroutines,
                |group| tracker.members_of(group),
            );
        }
        shared.metrics.set_census(pid, &groups);
        let stuck = crate::groups::stuck_groups(&groups);
        let suspect = groups.iter().find(|group| group.rank == 1).map(|group| {
            format!(
                " | leak suspect #1: {}",
                crate::report::suspect_summary(group)
            )
        });
        let stuck_line = stuck
            .first()
            .map(|group| format!(" | stuck: {}", crate::report::stuck_summary(group)));
        let line = suspect.unwrap_or_default() + &stuck_line.unwrap_or_default();
        self.top_suspect = (!line.is_empty()).then_some(line);
        // When the census was read, not now: the verdicts hold as of then (symbolizing many
        // goroutines can take a while on a loaded machine).
        let taken_at_unix_ms = (std::time::SystemTime::now() - started.elapsed())
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let user = views.iter().filter(|g| !g.system).count() as u64;
        let profile = crate::pprof::goroutine_profile(
            &crate::groups::profile_samples(&views),
            i64::try_from(taken_at_unix_ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
            None,
        );
        shared.publish(
            pid,
            Latest {
                profile,
                groups: GroupsResponse {
                    pid,
                    exe: self.info.exe.clone(),
                    go_version: self.binary.version.raw.clone(),
                    taken_at_unix_ms,
                    goroutines_user: user,
                    goroutines_system: views.len() as u64 - user,
                    groups,
                    probes: self.probe_state.clone(),
                },
                goroutines: GoroutinesResponse {
                    pid,
                    taken_at_unix_ms,
                    goroutines: GoroutineList::new(views),
                },
                leaks: LeaksResponse {
                    taken_at_unix_ms,
                    stuck,
                    ..leaks
                },
            },
        );
        tracing::debug!(
            pid,
            goroutines = census.goroutines.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "census"
        );
        if census.goroutines.len() >= TRIM_AFTER_CENSUS_OF {
            drop(census);
            crate::trim::release_free_memory();
        }
        changes
    }

    /// Reads the tracked contexts' cancellations that the probes could not see (see
    /// [`ContextTracker::check_memory`]).
    fn check_contexts_in_memory(&mut self, ktime: u64) {
        let memory = &self.memory;
        let (cancelled, gone) = self.contexts.check_memory(ktime, |addresses| {
            let mut buffer = vec![0u8; addresses.len() * contexts::CONTEXT_WORDS * 8];
            let mut reads: Vec<(u64, &mut [u8])> = addresses
                .iter()
                .copied()
                .zip(buffer.chunks_exact_mut(contexts::CONTEXT_WORDS * 8))
                .collect();
            let read = memory.read_many(&mut reads);
            buffer
                .chunks_exact(contexts::CONTEXT_WORDS * 8)
                .zip(read)
                .map(|(bytes, read)| {
                    read.then(|| {
                        std::array::from_fn(|i| {
                            let word = &bytes[i * 8..i * 8 + 8];
                            u64::from_le_bytes(word.try_into().unwrap_or_default())
                        })
                    })
                })
                .collect()
        });
        self.contexts_gap = !self.probe_state.on;
        tracing::debug!(
            pid = self.pid,
            cancelled,
            gone,
            "contexts checked in memory"
        );
    }

    /// Whether the process has exited or is exiting.
    pub fn is_exiting(&self) -> bool {
        self.process.is_exiting()
    }

    /// Reads this target's goroutines from memory (no event is applied here).
    pub fn take_census(&self) -> anyhow::Result<census::Census> {
        let waits = self.binary.waits.as_ref().ok().map(|(waits, _)| waits);
        census::take(&self.memory, &self.binary.g_layout, waits, self.allgs)
            .with_context(|| format!("cannot read the goroutines of PID {}", self.pid))
    }

    /// Who listens on which tracked unreleased context (goid -> context address), and the
    /// views of the listeners marked with the context's creation site when it is older than
    /// the grace period (for their groups). Nothing without the binary's wait layout.
    fn find_listeners(
        &mut self,
        census: &census::Census,
        views: &mut [crate::groups::GoroutineView],
        ktime: u64,
    ) -> std::collections::HashMap<u64, Vec<u64>> {
        let Ok((layout, _)) = &self.binary.waits else {
            return Default::default();
        };
        let (memory, contexts) = (&self.memory, &self.contexts);
        let listeners = self
            .listeners
            .update(memory, layout, &census.goroutines, views, || {
                crate::listeners::done_channels(
                    memory,
                    contexts.unreleased().map(|context| context.address),
                )
            });
        let grace = u64::try_from(self.judgement.context_grace.as_nanos()).unwrap_or(u64::MAX);
        let young = contexts
            .alive_as_of(ktime, self.releases_unseen())
            .saturating_sub(grace);
        for view in views.iter_mut() {
            if let Some(&context) = listeners.get(&view.goid) {
                view.listens_on = contexts.unreleased_site(context, young).cloned();
            }
        }
        let mut by_context: std::collections::HashMap<u64, Vec<u64>> = Default::default();
        for (goid, context) in listeners {
            by_context.entry(context).or_default().push(goid);
        }
        by_context
    }

    /// Judges the contexts against this census and publishes the metrics. Returns the report
    /// (its time stamp still to be set) and how the findings changed.
    fn context_verdicts(
        &mut self,
        ktime: u64,
        started: Instant,
        views: &[crate::groups::GoroutineView],
        listeners: &std::collections::HashMap<u64, Vec<u64>>,
        shared: &Shared,
    ) -> (LeaksResponse, LeakChanges) {
        let releases_unseen = self.releases_unseen();
        let tracker = &self.tracker;
        // Goroutines whose exit event was lost keep no binding.
        self.contexts
            .retain_goroutines(|goid| tracker.is_live(goid));
        let by_goid: std::collections::HashMap<u64, &crate::groups::GoroutineView> =
            views.iter().map(|view| (view.goid, view)).collect();
        let memory = &self.memory;
        let binary = &*self.binary;
        let verdicts = contexts::verdicts(
            &self.contexts,
            &mut self.context_history,
            &contexts::Inputs {
                now_ns: ktime,
                alive_as_of_ns: self.contexts.alive_as_of(ktime, releases_unseen),
                grace_ns: u64::try_from(self.judgement.context_grace.as_nanos())
                    .unwrap_or(u64::MAX),
                now: started,
                window: self.judgement.suspect_rules.window_short,
                is_live: &|goid| tracker.is_live(goid),
                views: &by_goid,
                read_len: &|map| memory.read_u64(map).ok(),
                is_program_function: &|name| binary.is_program_function(name),
                coverage: self
                    .probe_state
                    .sampled
                    .then_some(self.probe_state.coverage),
                listeners,
            },
        );
        let pid = self.pid;
        shared.metrics.set_contexts(pid, &verdicts);
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
        let mut changes = LeakChanges {
            report: (report != self.last_report).then(|| report.clone()),
            ..LeakChanges::default()
        };
        self.last_report = report;
        let lines = crate::report::context_lines(&verdicts.unreleased, &verdicts.outliving, 0);
        let keys = verdicts
            .unreleased
            .iter()
            .map(|u| format!("unreleased contexts created at {}", site_key(&u.site)))
            .chain(verdicts.outliving.iter().map(|o| {
                format!(
                    "goroutines started at {} outliving a context created at {}",
                    site_key(&o.goroutine_site),
                    site_key(&o.context_site)
                )
            }));
        let mut findings = std::collections::BTreeSet::new();
        for (key, line) in keys.zip(lines) {
            if !self.findings.contains(&key) {
                changes.appeared.push(line.trim().to_owned());
            }
            findings.insert(key);
        }
        changes.resolved = self.findings.difference(&findings).cloned().collect();
        self.findings = findings;
        let (tracked, bound) = self.contexts.sizes();
        let leaks = LeaksResponse {
            pid,
            exe: self.info.exe.clone(),
            go_version: self.binary.version.raw.clone(),
            taken_at_unix_ms: 0,
            contexts_probed: self.contexts_probed,
            grace_s: self.judgement.context_grace.as_secs_f64(),
            unreleased: verdicts.unreleased,
            outliving: verdicts.outliving,
            stuck: Vec::new(),
            children_check: verdicts.children_check,
            contexts_created: self.contexts.created,
            contexts_cancelled: self.contexts.cancelled,
            contexts_created_estimate: crate::api::estimate(
                self.contexts.created,
                self.probe_state.coverage,
            )
            .filter(|_| self.probe_state.sampled),
            contexts_tracked: tracked as u64,
            goroutines_bound: bound as u64,
            probes: self.probe_state.clone(),
        };
        (leaks, changes)
    }

    /// The one-line summary `ctxleak attach` prints every second.
    pub fn summary_line(&mut self, lost: u64) -> String {
        let counts = self.tracker.counts();
        let (created_before, exited_before) = self.summarized;
        self.summarized = (self.tracker.created, self.tracker.exited);
        let state = &self.probe_state;
        // Said once the probes have been off: until then every figure is exact.
        let probes = if !state.sampled {
            String::new()
        } else {
            format!(
                " | probes {} ({:.1}% of the last minute; --max-overhead {})",
                if state.on { "on" } else { "off" },
                state.duty * 100.0,
                state.max_overhead
            )
        };
        format!(
            "ctxleak: PID {} {}: {} goroutines ({} system) | +{} created -{} exited /s | {} events lost{probes}{}{}",
            self.pid,
            self.binary.version,
            counts.user,
            counts.system,
            self.tracker.created - created_before,
            self.tracker.exited - exited_before,
            lost,
            self.top_suspect.as_deref().unwrap_or_default(),
            self.context_summary.as_deref().unwrap_or_default(),
        )
    }

    pub fn start_summaries(&mut self) {
        self.summarized = (self.tracker.created, self.tracker.exited);
    }
}

/// How a census changed the context leak findings of a target.
#[derive(Debug, Default)]
pub struct LeakChanges {
    /// The whole report, when its text changed (empty: no leak left).
    pub report: Option<String>,
    /// Findings about a site (or pair of sites) that the last census did not have, as report
    /// lines.
    pub appeared: Vec<String>,
    /// What the findings that went away were about.
    pub resolved: Vec<String>,
}

fn site_key(site: &Option<crate::api::SourceLocation>) -> String {
    site.as_ref()
        .map_or_else(|| "an unknown line".to_owned(), |site| site.to_string())
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

pub use crate::procmem::monotonic_ns;
