//! The watched processes, together: one set of eBPF programs and one event ring for all of
//! them, probes attached once per executable file (by the [`Prober`] thread, so that the
//! kernel's waits never hold up the loop), events routed to each process's [`Session`] by
//! PID, a census of each on a timer, and detaching when they exit.
//!
//! `ctxleak attach` is a watcher with one process, `ctxleak daemon` one that a discovery
//! keeps adding processes to (see [`crate::daemon`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ctxleak_common::Counter;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::budget::{Bucket, ProbePolicy, Switch};
use crate::discover::ExeIdentity;
use crate::error_line::ErrorLine;
use crate::goexe::GoBinary;
use crate::http::{Shared, TargetEntry};
use crate::metrics::TargetInfo;
use crate::prober::{Done, Prober};
use crate::probes::{Attachment, EventStream, ProbeMaps, ProbeMode, Probes, Record};
use crate::session::{Judgement, LeakChanges, Session, monotonic_ns};
use crate::target::{ExeFile, Prepared, ProcessHandle, TargetError};

/// How long a stop waits for an attach under way to finish (one executable's probes: up to
/// about 0.7 s measured under churn), so that its links are handed over with the rest.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// How often the event rings are drained without a wakeup from the probes.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// How the processes are watched: the same for all of them.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    pub probe_mode: ProbeMode,
    pub judgement: Judgement,
    pub census_interval: Duration,
    /// Probes trap only in the one process given (`ctxleak attach`), or in every process
    /// running the executable, filtered by the programs (`ctxleak daemon`: one attachment
    /// per file however many processes run it).
    pub per_process: bool,
    /// Whether the probes run always, under a CPU budget, or never.
    pub policy: ProbePolicy,
}

impl WatchOptions {
    /// Options that cannot go together, in one line with the fix.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.probe_mode.park_times && self.policy != ProbePolicy::Exact {
            // Park times are kept in a kernel map, not sent as events: their hits would not
            // be counted against the budget.
            anyhow::bail!(
                "--park-times cannot run under --max-overhead {}: its probe sends no events for ctxleak to count against the budget; add --max-overhead exact, or leave --park-times out",
                self.policy
            );
        }
        Ok(())
    }

    /// Whether the `context` probes run on `binary` (some of the time, under a budget).
    pub fn contexts_probed(&self, binary: &GoBinary) -> bool {
        binary.context_probes().is_some()
            && !self.probe_mode.no_contexts
            && !self.probe_mode.floor
            && self.policy.probes()
    }
}

/// An executable file with probes attached (or, under a budget, switched off for now), and
/// the watched processes running it.
struct Executable {
    /// The file, held open: its probes attach to it (again, under a budget).
    exe: Arc<ExeFile>,
    binary: Arc<GoBinary>,
    /// None while its probes are off (under a budget), or not attached yet.
    attachment: Option<Attachment>,
    /// An attach is with the prober, not answered yet.
    attaching: bool,
    /// Its first attach was answered (or it needs none): processes that run it are watched
    /// at once, not put in `waiting`.
    ready: bool,
    /// Processes that wait for its first attach: watched when it is answered, so that their
    /// sessions start with the probes in place, as the first process's would.
    waiting: Vec<Prepared>,
    /// The budget switched its probes off while an attach was under way: they go off again
    /// as soon as it is answered.
    unwanted: bool,
    /// Under a budget: when its probes go off and on.
    bucket: Option<Bucket>,
    /// When the last "over budget" warning was logged.
    overrun_logged: Option<Instant>,
    /// Estimated cost already added to each process's `ctxleak_probe_cost_seconds_total`.
    cost_exported: f64,
    pids: Vec<u32>,
    /// Since when no watched process runs it: its probes stay for [`DETACH_GRACE`].
    idle_since: Option<Instant>,
}

/// The probes' estimated cost is reported as over budget when it was more than this many
/// times the budget over at least [`OVERRUN_SPAN`] (once per span).
const OVERRUN_FACTOR: f64 = 1.5;
const OVERRUN_SPAN: Duration = Duration::from_secs(30);

/// How long an executable keeps its probes (and its parsed binary) after its last watched
/// process exits. A service that restarts, or a command run in a loop, is back within it:
/// it finds its probes in place instead of paying a parse and ~100 ms per probe of kernel
/// work to detach and attach again.
const DETACH_GRACE: Duration = Duration::from_secs(3);

struct Watched {
    session: Session,
    identity: ExeIdentity,
    /// Tells this process's exit apart from that of an earlier process with the same PID.
    generation: u64,
    exit_watch: tokio::task::AbortHandle,
}

/// How the watch of a process that waited for its executable's probes began.
pub struct Attached {
    pub pid: u32,
    pub identity: ExeIdentity,
    /// The path it was started from.
    pub exe: std::path::PathBuf,
    /// The number of probes on its executable, or why it is not watched (as from
    /// [`Watcher::add`]; [`NotWatched::from_add`] sorts it).
    pub result: anyhow::Result<usize>,
}

/// Why [`Watcher::watch`] did not watch a process.
#[derive(Debug)]
pub enum NotWatched {
    /// Its executable is not a Go program.
    NotGo,
    /// It exited, or exec'd again, before ctxleak could read it (an exec comes back as an
    /// exec event).
    Gone,
    /// A Go executable ctxleak cannot read (the error says why).
    Unreadable(anyhow::Error),
    /// Anything else (the error says what).
    Failed(anyhow::Error),
}

impl NotWatched {
    /// Sorts an error of [`Watcher::add`]: an exit or exec during the attach is [`Gone`](Self::Gone).
    pub fn from_add(error: anyhow::Error) -> Self {
        match error.downcast_ref::<TargetError>() {
            Some(
                TargetError::ExitedDuringAttach { .. } | TargetError::ExecdDuringAttach { .. },
            ) => Self::Gone,
            _ => Self::Failed(error),
        }
    }
}

/// The error to give instead when the process exited or exec'd meanwhile.
fn gone(process: &ProcessHandle) -> Option<TargetError> {
    let pid = process.pid();
    match process.explain(TargetError::NoSuchProcess { pid }) {
        error
        @ (TargetError::ExitedDuringAttach { .. } | TargetError::ExecdDuringAttach { .. }) => {
            Some(error)
        }
        _ => None,
    }
}

/// Why [`Watcher::run`] returned (all are normal ends).
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// The last watched process exited (only when told to end then).
    TargetExited,
    /// The watch duration elapsed.
    Watched,
    /// The last watched process exec'd and the hooks did not watch its new program (only
    /// when told to end then).
    Execd,
}

/// What the watcher's loop does besides watching.
pub trait Hooks {
    /// Every second, after the kernel counters are checked.
    fn every_second(&mut self, _watcher: &mut Watcher) {}
    /// A census of `session` changed its context leak findings.
    fn leaks_changed(&mut self, _session: &Session, _changes: &LeakChanges) {}
    /// Processes that called exec since the last drain (after [`Watcher::watch_execs`]):
    /// every exec on the host, watched processes or not.
    fn execs(&mut self, _watcher: &mut Watcher, _pids: Vec<u32>) {}
    /// Exec notifications were lost: whatever started meanwhile must be found another way.
    fn execs_lost(&mut self, _watcher: &mut Watcher) {}
    /// On its own timer, if [`Hooks::rescan_interval`] gives one (daemon only).
    fn rescan(&mut self, _watcher: &mut Watcher) {}
    fn rescan_interval(&self) -> Option<Duration> {
        None
    }
    /// A watched process exited and was forgotten.
    fn exited(&mut self, _pid: u32) {}
    /// A process [`Watcher::add`] left waiting for its executable's probes is watched now, or
    /// could not be.
    fn attached(&mut self, _watcher: &mut Watcher, _attached: Attached) {}
}

/// SIGINT and SIGTERM, caught from when this is made (at the start of `attach` and `daemon`):
/// one that comes while ctxleak attaches ends the watch as soon as it starts, with the
/// probes handed over as on any stop, rather than killing ctxleak half-way.
pub struct Interrupts {
    interrupt: Signal,
    terminate: Signal,
}

impl Interrupts {
    pub fn catch() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

pub struct Watcher {
    maps: ProbeMaps,
    /// Attaches and detaches the probes away from the event loop.
    prober: Prober,
    answers: mpsc::UnboundedReceiver<Done>,
    interrupts: Interrupts,
    events: EventStream,
    execs: Option<aya::maps::RingBuf<aya::maps::MapData>>,
    shared: Arc<Shared>,
    options: WatchOptions,
    sessions: HashMap<u32, Watched>,
    executables: HashMap<ExeIdentity, Executable>,
    /// (pid, generation) of each watched process that exited, from its pidfd's task.
    exits_tx: mpsc::UnboundedSender<(u32, u64)>,
    exits_rx: mpsc::UnboundedReceiver<(u32, u64)>,
    generation: u64,
    /// Processes added since the last census: each gets its first census at once, so that
    /// its groups and leaks are served within moments of attaching, not a census interval.
    fresh: Vec<u32>,
    lost_seen: u64,
    read_errors_seen: u64,
    execs_lost_seen: u64,
    /// Per program: runs and run time already added to the metrics.
    program_runs_seen: HashMap<&'static str, crate::probes::ProgramRuns>,
    /// What one probe hit costs a target, for the budget ([`crate::calibrate`]).
    hit_cost: Duration,
    /// Gives what departed processes and executables freed back to the kernel.
    trimmer: crate::trim::Trimmer,
}

impl Watcher {
    /// `execs`: the exec tracepoint's ring ([`crate::probes::Programs::watch_execs`]), to
    /// follow every exec on the host ([`Hooks::execs`]).
    pub fn new(
        probes: Probes,
        events: EventStream,
        execs: Option<aya::maps::RingBuf<aya::maps::MapData>>,
        shared: Arc<Shared>,
        options: WatchOptions,
        interrupts: Interrupts,
    ) -> anyhow::Result<Self> {
        let Probes { mut programs, maps } = probes;
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let hit_cost = match options.policy {
            ProbePolicy::Budget { share } if share > 0.0 => {
                let cost = crate::calibrate::hit_cost(&mut programs);
                shared.metrics.probe_hit_cost.set(cost.as_secs_f64());
                cost
            }
            _ => crate::budget::DEFAULT_HIT_COST,
        };
        let (prober, answers) =
            Prober::spawn(programs).context("cannot start the thread that attaches the probes")?;
        Ok(Self {
            hit_cost,
            maps,
            prober,
            answers,
            interrupts,
            events,
            execs,
            shared,
            options,
            sessions: HashMap::new(),
            executables: HashMap::new(),
            exits_tx,
            exits_rx,
            generation: 0,
            fresh: Vec::new(),
            lost_seen: 0,
            read_errors_seen: 0,
            execs_lost_seen: 0,
            program_runs_seen: HashMap::new(),
            trimmer: crate::trim::Trimmer::default(),
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether `pid` is watched, or waits for its executable's probes to be watched.
    pub fn is_watched(&self, pid: u32) -> bool {
        self.sessions.contains_key(&pid) || self.is_waiting(pid)
    }

    fn is_waiting(&self, pid: u32) -> bool {
        self.executables
            .values()
            .any(|executable| executable.waiting.iter().any(|p| p.process.pid() == pid))
    }

    /// A process waits for its executable's first attach.
    fn anyone_waiting(&self) -> bool {
        self.executables
            .values()
            .any(|executable| !executable.waiting.is_empty())
    }

    /// No process is watched, nor waits to be.
    fn nothing_watched(&self) -> bool {
        self.sessions.is_empty() && !self.anyone_waiting()
    }

    pub fn watched(&self) -> usize {
        self.sessions.len()
    }

    pub fn session_mut(&mut self, pid: u32) -> Option<&mut Session> {
        self.sessions
            .get_mut(&pid)
            .map(|watched| &mut watched.session)
    }

    pub fn events_lost(&self) -> u64 {
        self.lost_seen
    }

    /// The parsed executable, when a watched process already runs this file.
    pub fn known_binary(&self, identity: ExeIdentity) -> Option<Arc<GoBinary>> {
        self.executables
            .get(&identity)
            .map(|executable| executable.binary.clone())
    }

    /// Starts watching a prepared process: registers it with the programs and, when its
    /// executable's probes are in place (or under way), seeds its goroutines from memory.
    /// Returns the number of probes on its executable; None when its executable's first
    /// attach is with the prober: it is watched when that is answered, and
    /// [`Hooks::attached`] says how it went. Nothing is left behind on error; an error its
    /// exit or an exec explains is [`TargetError::ExitedDuringAttach`] or
    /// [`TargetError::ExecdDuringAttach`].
    pub fn add(&mut self, prepared: Prepared) -> anyhow::Result<Option<usize>> {
        let pid = prepared.process.pid();
        let identity = prepared.identity;
        self.maps
            .register(
                pid,
                &prepared.binary,
                prepared.bias,
                self.options.probe_mode,
            )
            .context("cannot register the process with the eBPF programs")?;
        let known = self.executables.len();
        let executable = match self.executables.entry(identity) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let probes = self.options.policy.probes() && prepared.binary.probes.is_some();
                let bucket = match self.options.policy {
                    ProbePolicy::Budget { share } if probes => {
                        Some(Bucket::new(share, self.hit_cost, Instant::now()))
                    }
                    _ => None,
                };
                if probes {
                    let only = self.options.per_process.then_some(pid);
                    self.prober.attach(
                        identity,
                        prepared.exe.clone(),
                        prepared.binary.clone(),
                        self.options.probe_mode,
                        only,
                    );
                }
                let executable = entry.insert(Executable {
                    exe: prepared.exe.clone(),
                    binary: prepared.binary.clone(),
                    attachment: None,
                    attaching: probes,
                    ready: !probes,
                    waiting: Vec::new(),
                    unwanted: false,
                    bucket,
                    overrun_logged: None,
                    cost_exported: 0.0,
                    pids: Vec::new(),
                    idle_since: None,
                });
                self.shared
                    .metrics
                    .attached_executables
                    .set(known as i64 + 1);
                executable
            }
        };
        if !executable.ready {
            executable.idle_since = None;
            executable.waiting.push(prepared);
            return Ok(None);
        }
        self.start(prepared).map(Some)
    }

    /// [`Watcher::add`], waiting for the probes: for `ctxleak attach`, whose one process is
    /// all there is to watch.
    pub async fn add_and_wait(&mut self, prepared: Prepared) -> anyhow::Result<usize> {
        let pid = prepared.process.pid();
        if let Some(probes) = self.add(prepared)? {
            return Ok(probes);
        }
        struct Collect(Vec<Attached>);
        impl Hooks for Collect {
            fn attached(&mut self, _watcher: &mut Watcher, attached: Attached) {
                self.0.push(attached);
            }
        }
        let mut collect = Collect(Vec::new());
        self.settle(&mut collect).await?;
        collect
            .0
            .into_iter()
            .find(|attached| attached.pid == pid)
            .context("the attach was not answered")?
            .result
    }

    /// Waits until every process [`Watcher::add`] left waiting for its executable's probes
    /// is watched (or refused: [`Hooks::attached`] says). For the start, before
    /// [`Watcher::run`]: `attach` and the daemon's first scan say what they watch once it is.
    pub async fn settle(&mut self, hooks: &mut dyn Hooks) -> anyhow::Result<()> {
        while self.anyone_waiting() {
            let done = self
                .answers
                .recv()
                .await
                .context("the thread that attaches the probes ended")?;
            self.answer(hooks, done);
        }
        Ok(())
    }

    /// Applies an answer of the prober.
    fn answer(&mut self, hooks: &mut dyn Hooks, done: Done) {
        match done {
            Done::Attached { identity, result } => self.attached(hooks, identity, result),
            Done::ProgramRuns(runs) => self.export_program_runs(runs),
            Done::Detached { identity, trapping } => {
                tracing::debug!(?identity, ?trapping, "probes removed");
                if let Some(bucket) = self
                    .executables
                    .get_mut(&identity)
                    .and_then(|executable| executable.bucket.as_mut())
                {
                    bucket.charge_removal(trapping);
                }
            }
        }
    }

    /// An executable's probes are in place, or could not be placed: the processes waiting
    /// for them are watched (or refused), or, after a budget's window off, its processes'
    /// events flow again.
    fn attached(
        &mut self,
        hooks: &mut dyn Hooks,
        identity: ExeIdentity,
        result: Result<Attachment, crate::probes::ProbeError>,
    ) {
        let Some(executable) = self.executables.get_mut(&identity) else {
            // Dropped meanwhile: no process runs it any more.
            if let Ok(attachment) = result {
                self.prober.detach(identity, attachment);
            }
            return;
        };
        executable.attaching = false;
        let first = !executable.ready;
        executable.ready = true;
        let waiting = std::mem::take(&mut executable.waiting);
        match result {
            Ok(attachment) if executable.unwanted => {
                // Switched off by the budget while the attach was under way.
                executable.unwanted = false;
                self.prober.detach(identity, attachment);
            }
            Ok(attachment) => {
                executable.attachment = Some(attachment);
                if !first {
                    for pid in executable.pids.clone() {
                        if let Some(watched) = self.sessions.get_mut(&pid)
                            && let Err(error) = watched.session.probes_switched(true)
                        {
                            tracing::debug!(
                                pid,
                                "cannot read the goroutines after attaching: {}",
                                ErrorLine(error.as_ref())
                            );
                        }
                    }
                    tracing::debug!(?identity, "probe budget refilled: probes on");
                }
            }
            Err(error) if first => {
                self.executables.remove(&identity);
                self.shared
                    .metrics
                    .attached_executables
                    .set(self.executables.len() as i64);
                let line = ErrorLine(&error).to_string();
                let mut error = Some(anyhow::Error::new(error));
                for prepared in waiting {
                    let pid = prepared.process.pid();
                    self.maps
                        .unregister(pid, self.options.probe_mode.park_times);
                    let error = error.take().unwrap_or_else(|| anyhow::anyhow!("{line}"));
                    let result = Err(gone(&prepared.process).map_or(error, Into::into));
                    hooks.attached(
                        self,
                        Attached {
                            pid,
                            identity,
                            exe: prepared.path,
                            result,
                        },
                    );
                }
                return;
            }
            Err(error) => {
                let pid = executable.pids.first().copied();
                if let Some(bucket) = executable.bucket.as_mut() {
                    bucket.attach_failed();
                }
                tracing::warn!(
                    ?pid,
                    "cannot attach the probes again: {}",
                    ErrorLine(&error)
                );
            }
        }
        for prepared in waiting {
            let pid = prepared.process.pid();
            let exe = prepared.path.clone();
            let result = self.start(prepared);
            hooks.attached(
                self,
                Attached {
                    pid,
                    identity,
                    exe,
                    result,
                },
            );
        }
    }

    /// Watches a registered process whose executable is ready: its session, seeded from
    /// memory, its series and its exit watch. Returns the number of probes on its executable.
    fn start(&mut self, prepared: Prepared) -> anyhow::Result<usize> {
        let Prepared {
            process,
            exe: _,
            path,
            identity,
            binary,
            memory,
            bias,
            container,
        } = prepared;
        let pid = process.pid();
        let Some(executable) = self.executables.get_mut(&identity) else {
            self.maps
                .unregister(pid, self.options.probe_mode.park_times);
            anyhow::bail!("the executable vanished while attaching");
        };
        executable.pids.push(pid);
        executable.idle_since = None;
        let probe_count = executable
            .attachment
            .as_ref()
            .map_or(0, Attachment::probe_count);
        let probes_on = executable.attachment.is_some();

        let info = TargetInfo {
            exe: path.display().to_string(),
            go_version: binary.version.raw.clone(),
            container_id: container.container_id.clone(),
            pod_uid: container.pod_uid.clone(),
        };
        let mut target_metrics = self.shared.metrics.add_target(pid, &info);
        if let ProbePolicy::Budget { share } = self.options.policy {
            self.shared
                .metrics
                .set_probe_budget(&mut target_metrics, share);
        }
        let contexts_probed = self.options.contexts_probed(&binary);
        let handle = match process.try_clone() {
            Ok(handle) => handle,
            Err(error) => {
                self.forget(pid, identity);
                return Err(error.into());
            }
        };
        let mut session = Session::new(
            handle,
            memory,
            binary,
            bias,
            info.clone(),
            target_metrics,
            contexts_probed,
            self.options.judgement,
            self.options.policy,
        );
        if self.options.probe_mode.releases_from_memory {
            session.read_releases_from_memory();
        }
        if !probes_on {
            // Its executable's probes are off for now: its live set comes from memory.
            let _ = session.probes_switched(false);
        }
        if let Err(error) = session.resync() {
            self.forget(pid, identity);
            return Err(gone(&process).map_or(error, Into::into));
        }
        session.start_summaries();
        self.shared.add_target(TargetEntry {
            pid,
            exe: info.exe,
            go_version: info.go_version,
            container_id: info.container_id,
            pod_uid: info.pod_uid,
        });
        self.generation += 1;
        let generation = self.generation;
        let exits = self.exits_tx.clone();
        let exit_watch = tokio::spawn(async move {
            process.exited().await;
            let _ = exits.send((pid, generation));
        })
        .abort_handle();
        self.sessions.insert(
            pid,
            Watched {
                session,
                identity,
                generation,
                exit_watch,
            },
        );
        self.shared.metrics.targets.set(self.sessions.len() as i64);
        self.fresh.push(pid);
        Ok(probe_count)
    }

    /// Watches `pid`, which runs the executable `identity`, if it is a Go program: reads its
    /// executable (unless a watched process runs the same file), prepares it and
    /// [`Watcher::add`]s it. The daemon's way for every process it finds, and attach's for
    /// the program its target exec'd. Returns the number of probes on its executable, or
    /// None when it waits for them ([`Watcher::add`]).
    pub fn watch(&mut self, pid: u32, identity: ExeIdentity) -> Result<Option<usize>, NotWatched> {
        let known = self.known_binary(identity);
        if known.is_none() {
            let link = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
            match crate::discover::is_go_executable(&link) {
                Ok(true) => {}
                Ok(false) => return Err(NotWatched::NotGo),
                // Most often it exited meanwhile.
                Err(error) => {
                    tracing::debug!(pid, "cannot read the executable: {}", ErrorLine(&error));
                    return Err(NotWatched::Gone);
                }
            }
        }
        let process = ProcessHandle::open(pid).map_err(|_| NotWatched::Gone)?;
        // Parsing a binary the first time takes up to a few hundred ms: let the other tasks
        // (the HTTP endpoint) run meanwhile.
        let prepared = tokio::task::block_in_place(|| crate::target::prepare(process, |_| known))
            .map_err(|error| match error {
            TargetError::ExitedDuringAttach { .. }
            | TargetError::ExecdDuringAttach { .. }
            | TargetError::NoSuchProcess { .. } => NotWatched::Gone,
            error @ TargetError::Binary { .. } => NotWatched::Unreadable(error.into()),
            error => NotWatched::Failed(error.into()),
        })?;
        self.add(prepared).map_err(NotWatched::from_add)
    }

    /// Stops watching `pid` (it exited, or exec'd another program): its series go, and its
    /// executable's probes too when no other watched process runs it.
    pub fn remove(&mut self, pid: u32) -> Option<Session> {
        for executable in self.executables.values_mut() {
            if let Some(at) = executable
                .waiting
                .iter()
                .position(|prepared| prepared.process.pid() == pid)
            {
                // It waited for its executable's probes: it never was watched.
                executable.waiting.swap_remove(at);
                self.maps
                    .unregister(pid, self.options.probe_mode.park_times);
                return None;
            }
        }
        let watched = self.sessions.remove(&pid)?;
        watched.exit_watch.abort();
        self.forget(pid, watched.identity);
        self.shared.metrics.targets.set(self.sessions.len() as i64);
        self.trimmer.freed();
        Some(watched.session)
    }

    fn forget(&mut self, pid: u32, identity: ExeIdentity) {
        self.maps
            .unregister(pid, self.options.probe_mode.park_times);
        self.shared.remove_target(pid);
        if let Some(executable) = self.executables.get_mut(&identity) {
            executable.pids.retain(|&p| p != pid);
            if executable.pids.is_empty() {
                executable.idle_since = Some(Instant::now());
            }
        }
    }

    /// Detaches the executables no watched process has run for [`DETACH_GRACE`] (all of them
    /// with `now` None).
    fn detach_idle(&mut self, now: Option<Instant>) {
        let idle: Vec<ExeIdentity> = self
            .executables
            .iter()
            .filter(|(_, e)| {
                // One with an attach under way goes once it is answered.
                !e.attaching
                    && e.waiting.is_empty()
                    && e.idle_since
                        .is_some_and(|since| now.is_none_or(|now| now - since >= DETACH_GRACE))
            })
            .map(|(&identity, _)| identity)
            .collect();
        for identity in idle {
            self.trimmer.freed();
            if let Some(attachment) = self
                .executables
                .remove(&identity)
                .and_then(|executable| executable.attachment)
            {
                self.prober.detach(identity, attachment);
            }
        }
        self.shared
            .metrics
            .attached_executables
            .set(self.executables.len() as i64);
    }

    /// Under a budget: accounts each executable's probe hits since the last call and
    /// switches its probes off or on as its bucket says (see [`crate::budget`]).
    fn steer_budget(&mut self, now: Instant) {
        let identities: Vec<ExeIdentity> = self
            .executables
            .iter()
            .filter(|(_, executable)| executable.bucket.is_some())
            .map(|(&identity, _)| identity)
            .collect();
        for identity in identities {
            let Some(executable) = self.executables.get_mut(&identity) else {
                continue;
            };
            // The budget is per process: the busiest process of the file sets the pace.
            let mut hits = 0;
            for pid in &executable.pids {
                if let Some(watched) = self.sessions.get_mut(pid) {
                    hits = hits.max(watched.session.take_hits());
                }
            }
            let Some(bucket) = executable.bucket.as_mut() else {
                continue;
            };
            match bucket.update(now, hits) {
                Switch::Stay => {}
                Switch::Detach => {
                    let pids = executable.pids.clone();
                    match executable.attachment.take() {
                        Some(attachment) => self.prober.detach(identity, attachment),
                        None => executable.unwanted = executable.attaching,
                    }
                    for pid in pids {
                        if let Some(watched) = self.sessions.get_mut(&pid) {
                            let _ = watched.session.probes_switched(false);
                        }
                    }
                    tracing::debug!(?identity, "probe budget spent: probes off");
                }
                Switch::Attach => self.reattach(identity),
            }
        }
    }

    /// Attaches an executable's probes again after its budget refilled ([`Watcher::attached`]
    /// switches its processes over when the prober answers).
    fn reattach(&mut self, identity: ExeIdentity) {
        let Some(executable) = self.executables.get_mut(&identity) else {
            return;
        };
        executable.unwanted = false;
        if executable.attaching || executable.attachment.is_some() {
            return;
        }
        let Some(&pid) = executable.pids.first() else {
            return; // Idle: detach_idle will take it.
        };
        executable.attaching = true;
        let only = self.options.per_process.then_some(pid);
        self.prober.attach(
            identity,
            executable.exe.clone(),
            executable.binary.clone(),
            self.options.probe_mode,
            only,
        );
    }

    /// Once a second: each process's probe duty and estimated cost over the last minute (a
    /// warning when the cost stays well over the budget), its live set read from memory
    /// while its probes are off, and the cancellations the probes do not trap.
    fn publish_budget(&mut self, now: Instant) {
        for executable in self.executables.values_mut() {
            let (recent, spent) = match executable.bucket.as_mut() {
                // Exact: on whenever attached; no estimate of the cost.
                None => {
                    let on = f64::from(u8::from(executable.attachment.is_some()));
                    for pid in &executable.pids {
                        if let Some(watched) = self.sessions.get_mut(pid) {
                            watched.session.set_probe_duty(on);
                        }
                    }
                    continue;
                }
                Some(bucket) => {
                    let recent = bucket.recent();
                    // A window's detach can take seconds on a busy host, the target paying
                    // for every hit meanwhile: the bucket makes up for it later, but a
                    // budget that a single window overruns cannot be met.
                    if recent.span >= OVERRUN_SPAN
                        && recent.cost > bucket.share() * OVERRUN_FACTOR
                        && executable
                            .overrun_logged
                            .is_none_or(|at| now.duration_since(at) >= OVERRUN_SPAN)
                    {
                        executable.overrun_logged = Some(now);
                        tracing::warn!(
                            pids = ?executable.pids,
                            cost_percent = recent.cost * 100.0,
                            budget_percent = bucket.share() * 100.0,
                            "the probes cost more than their budget over the last minute: a single window's hits (detaching takes a while on a busy host) overrun it; give a larger --max-overhead, or 0 for memory only"
                        );
                    }
                    (recent, bucket.spent())
                }
            };
            let cost = spent - executable.cost_exported;
            executable.cost_exported = spent;
            for pid in &executable.pids {
                if let Some(watched) = self.sessions.get_mut(pid) {
                    watched.session.set_probe_duty(recent.duty);
                    let metrics = watched.session.metrics();
                    metrics.probe_cost.inc_by(cost.max(0.0));
                    metrics.probe_cost_ratio.set(recent.cost);
                }
            }
        }
        for watched in self.sessions.values_mut() {
            watched.session.check_releases(now);
            if let Err(error) = watched.session.count_from_memory(now, false) {
                tracing::debug!(
                    pid = watched.session.pid(),
                    "cannot count the goroutines from memory: {}",
                    ErrorLine(error.as_ref())
                );
            }
        }
    }

    /// Watches until interrupted (also by a signal that came before), until `watch_for` elapsed (a last census is taken), or,
    /// with `end_when_empty`, until no watched process is left.
    pub async fn run(
        &mut self,
        hooks: &mut dyn Hooks,
        watch_for: Option<Duration>,
        end_when_empty: bool,
    ) -> anyhow::Result<Ending> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The probes wake ctxleak only when the ring fills up (a wakeup per event costs the
        // target more than the probe itself): drain it on a short timer too.
        let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut census_tick = tokio::time::interval(self.options.census_interval);
        census_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let rescan_every = hooks.rescan_interval();
        let mut rescan_tick =
            tokio::time::interval(rescan_every.unwrap_or(Duration::from_secs(3600)));
        rescan_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rescan_tick.reset();
        // Far enough to never come when there is no limit.
        let watched = tokio::time::sleep(watch_for.unwrap_or(Duration::from_secs(86_400 * 365)));
        tokio::pin!(watched);
        let shared = self.shared.clone();
        loop {
            tokio::select! {
                ready = self.events.readable_mut() => {
                    let mut guard = ready.context("cannot poll the event ring buffer")?;
                    guard.clear_ready();
                    drop(guard);
                    self.drain();
                }
                _ = drain_tick.tick() => {
                    self.drain();
                    self.steer_budget(Instant::now());
                    let pids = self.drain_execs();
                    if !pids.is_empty() {
                        hooks.execs(self, pids);
                        if end_when_empty && self.nothing_watched() {
                            return Ok(Ending::Execd);
                        }
                    }
                    if !self.fresh.is_empty() {
                        let fresh = std::mem::take(&mut self.fresh);
                        self.census(hooks, fresh);
                    }
                }
                _ = tick.tick() => {
                    self.detach_idle(Some(Instant::now()));
                    self.trimmer.tick(Instant::now());
                    self.publish_budget(Instant::now());
                    if self.check_kernel_counters() {
                        hooks.execs_lost(self);
                    }
                    hooks.every_second(self);
                }
                _ = census_tick.tick() => {
                    self.fresh.clear();
                    self.census_all(hooks);
                }
                _ = rescan_tick.tick(), if rescan_every.is_some() => hooks.rescan(self),
                () = shared.census_wanted.notified() => {
                    // A request wants an answer as of now (http.rs: at most one census a
                    // second per process, however many ask).
                    let wanted = self.shared.take_wanted();
                    self.census(hooks, wanted);
                }
                Some(done) = self.answers.recv() => {
                    self.answer(hooks, done);
                    // A process that exec'd a program that could not be watched after all.
                    if end_when_empty && self.nothing_watched() {
                        return Ok(Ending::Execd);
                    }
                }
                Some((pid, generation)) = self.exits_rx.recv() => {
                    let current = self.sessions.get(&pid).is_some_and(|w| w.generation == generation);
                    if current {
                        self.drain();
                        self.remove(pid);
                        hooks.exited(pid);
                        if end_when_empty && self.nothing_watched() {
                            return Ok(Ending::TargetExited);
                        }
                    }
                }
                () = &mut watched => {
                    self.census_all(hooks);
                    return Ok(Ending::Watched);
                }
                () = self.interrupts.recv() => return Ok(Ending::Interrupted),
            }
        }
    }

    /// Applies every event in the ring, each to its process's session.
    pub fn drain(&mut self) {
        let sessions = &mut self.sessions;
        let ring = self.events.get_mut();
        // One clock read per drain: context events are stamped with it (they are at most one
        // drain interval old, 10 ms, unless the ring backs up).
        let received_ns = monotonic_ns();
        while let Some(item) = ring.next() {
            match crate::probes::decode_record(&item) {
                Some(Record::Goroutine(event)) => {
                    if let Some(watched) = sessions.get_mut(&event.header.pid) {
                        watched.session.apply_goroutine(&event);
                    }
                }
                Some(Record::Context(event)) => {
                    if let Some(watched) = sessions.get_mut(&event.change.pid) {
                        watched.session.apply_context(&event, received_ns);
                    }
                }
                None => {}
            }
        }
        for watched in sessions.values_mut() {
            watched.session.publish_counts();
        }
    }

    /// The processes that exec'd since the last call, each once.
    fn drain_execs(&mut self) -> Vec<u32> {
        let Some(ring) = self.execs.as_mut() else {
            return Vec::new();
        };
        let mut pids = Vec::new();
        while let Some(item) = ring.next() {
            if item.len() >= size_of::<ctxleak_common::ExecEvent>() {
                // SAFETY: ExecEvent is plain #[repr(C)] integers and the record is long enough.
                let event = unsafe {
                    std::ptr::read_unaligned(item.as_ptr().cast::<ctxleak_common::ExecEvent>())
                };
                if !pids.contains(&event.pid) {
                    pids.push(event.pid);
                }
            }
        }
        pids
    }

    /// A census of every watched process.
    fn census_all(&mut self, hooks: &mut dyn Hooks) {
        let pids: Vec<u32> = self.sessions.keys().copied().collect();
        self.census(hooks, pids);
    }

    /// A census of each of `pids` still watched.
    fn census(&mut self, hooks: &mut dyn Hooks, pids: Vec<u32>) {
        for pid in pids {
            let started = Instant::now();
            let ktime = monotonic_ns();
            let Some(watched) = self.sessions.get(&pid) else {
                continue;
            };
            let census = match watched.session.take_census() {
                Ok(census) => census,
                // Its exit is on its way through the pidfd.
                Err(error) if watched.session.is_exiting() => {
                    tracing::debug!(
                        pid,
                        "census of a process that is exiting: {}",
                        ErrorLine(error.as_ref())
                    );
                    continue;
                }
                Err(error) => {
                    tracing::warn!(pid, "census failed: {}", ErrorLine(error.as_ref()));
                    continue;
                }
            };
            // Every event up to now first, so that only real misses disagree.
            self.drain();
            let parks = self.maps.park_times(pid);
            let Some(watched) = self.sessions.get_mut(&pid) else {
                continue;
            };
            let changes = watched
                .session
                .census(census, ktime, started, &parks, &self.shared);
            hooks.leaks_changed(&watched.session, &changes);
        }
    }

    /// Adds what the kernel counted for each program since the last look to the metrics.
    fn export_program_runs(&mut self, runs: Vec<crate::probes::ProgramRuns>) {
        for now in runs {
            let before = self.program_runs_seen.insert(now.program, now);
            let (runs, time) = before.map_or((0, Duration::ZERO), |b| (b.runs, b.run_time));
            self.shared.metrics.add_probe_runs(
                now.program,
                now.runs.saturating_sub(runs),
                now.run_time.saturating_sub(time).as_secs_f64(),
            );
        }
    }

    /// Lost events mean the live sets are no longer exact: count them and read every
    /// process afresh. Returns whether exec notifications were lost.
    fn check_kernel_counters(&mut self) -> bool {
        if self.options.probe_mode.run_stats {
            // Answered with Done::ProgramRuns.
            self.prober.program_runs();
        }
        let read_errors = self.maps.counter(Counter::ReadErrors);
        self.shared
            .metrics
            .probe_read_errors
            .inc_by(read_errors.saturating_sub(self.read_errors_seen));
        self.read_errors_seen = self.read_errors_seen.max(read_errors);
        let lost = self.maps.counter(Counter::EventsLost);
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
            for watched in self.sessions.values_mut() {
                watched.session.count_resync();
                if let Err(error) = watched.session.resync() {
                    tracing::warn!(
                        pid = watched.session.pid(),
                        "resync failed: {}",
                        ErrorLine(error.as_ref())
                    );
                }
            }
        }
        let execs_lost = self.maps.counter(Counter::ExecsLost);
        if execs_lost > self.execs_lost_seen {
            self.shared
                .metrics
                .exec_events_lost
                .inc_by(execs_lost - self.execs_lost_seen);
            self.execs_lost_seen = execs_lost;
            return true;
        }
        false
    }
}

impl Drop for Watcher {
    /// Ends the prober, which hands every probe to a helper process that outlives ctxleak
    /// and removes them in the background ([`crate::release`]), so that a stop does not wait
    /// for the kernel (see [`Prober::stop`]).
    fn drop(&mut self) {
        let attachments = self
            .executables
            .drain()
            .filter_map(|(identity, executable)| Some((identity, executable.attachment?)))
            .collect();
        self.prober.stop(attachments, STOP_WAIT);
    }
}
