//! `ctxleak daemon`: watches every Go process on the host that the filters select.
//!
//! Processes are found three ways: a scan of /proc at start, a BTF tracepoint on
//! `sched_process_exec` for every exec afterwards (a new process is looked at within the
//! 10 ms drain interval), and a rescan of /proc on a timer and whenever exec notifications
//! were lost, as a safety net. Each candidate passes the filters, then a cheap check for a
//! Go executable (its ELF section headers only), and only then is its binary parsed, once
//! per executable file. Exits come from each process's pidfd.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::ListenAddress;
use crate::discover::{self, ExeIdentity, Filters};
use crate::error_line::ErrorLine;
use crate::probes::Probes;
use crate::session::{LeakChanges, Session};
use crate::target;
use crate::watcher::{Attached, Hooks, Interrupts, NotWatched, WatchOptions, Watcher};

pub struct DaemonOptions {
    pub listen: ListenAddress,
    pub ring_bytes: u32,
    pub watch: WatchOptions,
    pub filters: Filters,
    /// How often /proc is rescanned besides the exec tracepoint.
    pub rescan_interval: Duration,
}

/// Executables found not worth another look, remembered by file so that a host that runs
/// `sh` a thousand times a second costs one stat each. Bounded: forgotten wholesale when full.
const MAX_SKIPPED: usize = 4096;

pub async fn run(options: DaemonOptions) -> anyhow::Result<()> {
    options.watch.check()?;
    let interrupts = Interrupts::catch()?;
    target::check_privileges_for("load eBPF programs and read the memory of other processes")?;
    let listener = crate::metrics::bind(&options.listen).await?;
    let (mut probes, events) = Probes::load_or_explain(options.ring_bytes)?;
    if options.watch.probe_mode.run_stats {
        probes.enable_run_stats()?;
    }
    // Before the first scan, so that a process started during it is not missed.
    let execs = probes.programs.watch_execs().map_err(|error| {
        anyhow::anyhow!(
            "cannot follow new processes (BTF tracepoint sched_process_exec): {}; the kernel needs BTF (CONFIG_DEBUG_INFO_BTF, /sys/kernel/btf/vmlinux)",
            ErrorLine(&error)
        )
    })?;
    let shared = std::sync::Arc::new(crate::http::Shared::default());
    let mut watcher = Watcher::new(
        probes,
        events,
        Some(execs),
        shared.clone(),
        WatchOptions {
            per_process: false,
            ..options.watch
        },
        interrupts,
    )?;
    let listen = listener
        .local_addr()
        .map_or_else(|_| options.listen.to_string(), |a| a.to_string());
    tokio::spawn(crate::http::serve(listener, shared));
    let mut discovery = Discovery {
        filters: options.filters,
        skipped: HashMap::new(),
        own_pid: std::process::id(),
        rescan_interval: options.rescan_interval,
    };
    discovery.scan(&mut watcher);
    watcher.settle(&mut discovery).await?;
    eprintln!(
        "ctxleak: daemon watching {} Go processes ({}); metrics at http://{listen}/metrics",
        watcher.watched(),
        discovery.filters.describe(),
    );
    watcher.run(&mut discovery, None, false).await?;
    let watched = watcher.watched();
    drop(watcher); // Detaches every probe.
    eprintln!("ctxleak: daemon stopped; detached from {watched} processes, which keep running");
    Ok(())
}

/// Why an executable is not looked at again.
#[derive(Clone, Copy, Debug)]
enum Skip {
    NotGo,
    /// A Go binary ctxleak cannot read (its error was logged once).
    Unreadable,
}

struct Discovery {
    filters: Filters,
    skipped: HashMap<ExeIdentity, Skip>,
    own_pid: u32,
    rescan_interval: Duration,
}

impl Discovery {
    /// Looks at every process in /proc that is not watched yet.
    fn scan(&mut self, watcher: &mut Watcher) {
        let pids = match discover::pids() {
            Ok(pids) => pids,
            Err(error) => {
                tracing::warn!("cannot list /proc: {error}");
                return;
            }
        };
        for pid in pids {
            if !watcher.is_watched(pid) {
                self.consider(watcher, pid);
            }
        }
    }

    /// Watches `pid` if it is a Go process the filters select.
    fn consider(&mut self, watcher: &mut Watcher, pid: u32) {
        if pid == self.own_pid {
            return;
        }
        // Gone already, or a kernel thread: nothing to watch.
        let candidate = match discover::candidate(pid) {
            Ok(candidate) => candidate,
            Err(discover::DiscoverError::Gone { .. }) => {
                tracing::debug!(pid, "exited before ctxleak could read it");
                return;
            }
            Err(error) => {
                tracing::trace!(pid, "not a candidate: {}", ErrorLine(&error));
                return;
            }
        };
        if !self.filters.matches(&candidate) {
            tracing::debug!(pid, exe = %candidate.exe_path.display(), "not selected by the filters");
            return;
        }
        let identity = candidate.identity;
        if let Some(why) = self.skipped.get(&identity) {
            tracing::debug!(pid, exe = %candidate.exe_path.display(), "skipped: {why:?}");
            return;
        }
        let watched = watcher.watch(pid, identity);
        self.watched(watcher, pid, identity, &candidate.exe_path, watched);
    }

    /// Says how the watch of `pid` began (or why it did not), now or once its executable's
    /// probes are in place ([`Hooks::attached`]).
    fn watched(
        &mut self,
        watcher: &mut Watcher,
        pid: u32,
        identity: ExeIdentity,
        exe: &std::path::Path,
        watched: Result<Option<usize>, NotWatched>,
    ) {
        match watched {
            Ok(Some(probes)) => {
                if let Some(session) = watcher.session_mut(pid) {
                    let info = session.info();
                    tracing::info!(
                        pid,
                        exe = info.exe,
                        go_version = info.go_version,
                        container_id = info.container_id.as_deref().unwrap_or_default(),
                        pod_uid = info.pod_uid.as_deref().unwrap_or_default(),
                        probes,
                        "attached"
                    );
                }
            }
            Ok(None) => {
                tracing::debug!(pid, exe = %exe.display(), "waiting for its executable's probes");
            }
            Err(NotWatched::NotGo) => {
                tracing::debug!(pid, exe = %exe.display(), "not a Go program");
                self.skip(identity, Skip::NotGo);
            }
            Err(NotWatched::Gone) => {
                tracing::debug!(pid, exe = %exe.display(), "exited (or exec'd) before ctxleak could watch it");
            }
            Err(NotWatched::Unreadable(error)) => {
                tracing::warn!(pid, exe = %exe.display(), "not watched: {}", ErrorLine(error.as_ref()));
                watcher.shared().metrics.attach_failures.inc();
                self.skip(identity, Skip::Unreadable);
            }
            Err(NotWatched::Failed(error)) => {
                tracing::warn!(pid, exe = %exe.display(), "not watched: {}", ErrorLine(error.as_ref()));
                watcher.shared().metrics.attach_failures.inc();
            }
        }
    }

    fn skip(&mut self, identity: ExeIdentity, why: Skip) {
        if self.skipped.len() >= MAX_SKIPPED {
            self.skipped.clear();
        }
        self.skipped.insert(identity, why);
    }
}

impl Hooks for Discovery {
    fn attached(&mut self, watcher: &mut Watcher, attached: Attached) {
        let watched = attached.result.map(Some).map_err(NotWatched::from_add);
        self.watched(
            watcher,
            attached.pid,
            attached.identity,
            &attached.exe,
            watched,
        );
    }

    fn execs(&mut self, watcher: &mut Watcher, pids: Vec<u32>) {
        for pid in pids {
            // A watched process that exec'd runs another program now: start over with it.
            if let Some(session) = watcher.remove(pid) {
                tracing::info!(
                    pid,
                    exe = session.info().exe,
                    "detached: the process exec'd"
                );
            }
            self.consider(watcher, pid);
        }
    }

    fn execs_lost(&mut self, watcher: &mut Watcher) {
        tracing::warn!("exec notifications lost (ring buffer full); rescanning /proc");
        self.scan(watcher);
    }

    fn rescan(&mut self, watcher: &mut Watcher) {
        self.scan(watcher);
    }

    fn rescan_interval(&self) -> Option<Duration> {
        Some(self.rescan_interval)
    }

    fn exited(&mut self, pid: u32) {
        tracing::info!(pid, "detached: the process exited");
    }

    fn leaks_changed(&mut self, session: &Session, changes: &LeakChanges) {
        let pid = session.pid();
        let exe = &session.info().exe;
        // The metrics carry the counts; the log says when a finding starts and ends.
        for line in &changes.appeared {
            tracing::info!(pid, exe, "context leak found: {line}");
        }
        for what in &changes.resolved {
            tracing::info!(pid, exe, "context leak gone: {what}");
        }
    }
}
