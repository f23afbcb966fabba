//! `ctxleak attach --pid N`: watch one Go process until it exits or ctxleak is interrupted
//! (and `ctxleak report`: the same for a while, then a report). A target that execs another
//! Go program is followed (watched afresh, as the daemon does); one that execs anything else
//! ends the watch.
//!
//! Order matters for exactness: probes are attached first, then the live set is seeded from
//! the target's memory; events that raced with the snapshot are reconciled by the tracker.
//! Every `census_interval` a census of all goroutines (states, stacks, creation sites) is
//! read from memory, grouped, and served as metrics and JSON.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{GroupsResponse, LeaksResponse};
use crate::budget::ProbePolicy;
use crate::config::ListenAddress;
use crate::error_line::ErrorLine;
use crate::http::Shared;
use crate::probes::Probes;
use crate::session::{LeakChanges, Session};
use crate::target::{self, ProcessHandle};
use crate::watcher::{Attached, Hooks, Interrupts, NotWatched, WatchOptions, Watcher};

pub use crate::watcher::Ending;

pub struct AttachOptions {
    pub pid: u32,
    pub listen: ListenAddress,
    /// Print a one-line summary every second.
    pub summary: bool,
    /// Size of the probe event ring buffer in bytes.
    pub ring_bytes: u32,
    /// How the process is watched (`per_process` is set here: probes trap in it alone).
    pub watch: WatchOptions,
    /// Watch this long, take a last census and end (`ctxleak report`); None: until the
    /// target exits or ctxleak is interrupted.
    pub watch_for: Option<Duration>,
}

/// How a session ended, and its last context verdicts (None if no census ran).
pub struct Outcome {
    pub ending: Ending,
    pub leaks: Option<LeaksResponse>,
    pub groups: Option<GroupsResponse>,
}

pub async fn run(options: AttachOptions) -> anyhow::Result<Outcome> {
    let pid = options.pid;
    let watch = WatchOptions {
        per_process: true,
        ..options.watch
    };
    watch.check()?;
    let interrupts = Interrupts::catch()?;
    let process = ProcessHandle::open(pid)?;
    target::check_privileges(pid)?;
    // Bound before anything touches the target, so a busy address fails without attaching.
    let listener = crate::metrics::bind(&options.listen).await?;
    let (mut probes, events) = Probes::load_or_explain(options.ring_bytes)?;
    if watch.probe_mode.run_stats {
        probes.enable_run_stats()?;
    }
    let shared = Arc::new(Shared::default());
    // Before the target is read: an exec from then on is seen, however early.
    let execs = probes
        .programs
        .watch_execs()
        .inspect_err(|error| {
            tracing::warn!(
                "cannot see execs (BTF tracepoint sched_process_exec: {}): if PID {pid} execs another program, ctxleak will not notice; the kernel needs BTF (CONFIG_DEBUG_INFO_BTF) for that",
                ErrorLine(error)
            );
        })
        .ok();
    let mut watcher = Watcher::new(probes, events, execs, shared.clone(), watch, interrupts)?;
    let prepared = target::prepare(process, |_| None)?;
    let exe = prepared.path.display().to_string();
    let version = prepared.binary.version.to_string();
    let has_contexts = prepared.binary.context_probes().is_some();
    let contexts_probed = watch.contexts_probed(&prepared.binary);
    let unavailable = prepared.binary.probes_unavailable();
    let probe_count = watcher.add_and_wait(prepared).await?;
    let listen = listener
        .local_addr()
        .map_or_else(|_| options.listen.to_string(), |a| a.to_string());
    tokio::spawn(crate::http::serve(listener, shared.clone()));
    eprintln!(
        "ctxleak: attached to PID {pid} ({exe}, {version}, {}{}); metrics at http://{listen}/metrics",
        match watch.policy {
            _ if let Some(line) = &unavailable => line.clone(),
            ProbePolicy::Exact => format!("{probe_count} probes"),
            ProbePolicy::Budget { .. } if !watch.policy.probes() => {
                "memory only: no probes (--max-overhead 0)".to_owned()
            }
            policy => format!("{probe_count} probes within --max-overhead {policy}"),
        },
        if contexts_probed {
            ", contexts"
        } else if !has_contexts {
            ", no context package"
        } else {
            ""
        },
    );
    let mut printer = Printer {
        pid,
        summary: options.summary,
        execd: None,
    };
    let ending = watcher.run(&mut printer, options.watch_for, true).await?;
    let latest = shared.latest(pid);
    drop(watcher); // Detaches every uprobe.
    match ending {
        Ending::Interrupted | Ending::Watched => {
            eprintln!("ctxleak: detached from PID {pid}; it keeps running")
        }
        Ending::TargetExited => eprintln!("ctxleak: PID {pid} exited; detached"),
        Ending::Execd => match printer.execd.take() {
            Some(Ok(line)) => eprintln!("{line}"),
            Some(Err(error)) => return Err(error),
            None => eprintln!("ctxleak: PID {pid} exec'd another program; detached"),
        },
    }
    Ok(Outcome {
        ending,
        leaks: latest.as_ref().map(|latest| latest.leaks.clone()),
        groups: latest.map(|latest| latest.groups.clone()),
    })
}

/// `ctxleak attach`'s output: a summary line every second and each changed leak report;
/// and its target's execs, followed when the new program is a Go program.
struct Printer {
    pid: u32,
    summary: bool,
    /// Why watching ended when the target exec'd a program ctxleak does not watch: the line
    /// to say (a program that is not Go), or the error (a Go program it cannot read).
    execd: Option<anyhow::Result<String>>,
}

impl Printer {
    /// Says what became of the target after it exec'd `exe`.
    fn execd_to(
        &mut self,
        watcher: &mut Watcher,
        exe: &str,
        watched: Result<Option<usize>, NotWatched>,
    ) {
        let pid = self.pid;
        self.execd = match watched {
            // Watched once its probes are in place: Hooks::attached says.
            Ok(None) => None,
            Ok(Some(probes)) => {
                let version = watcher
                    .session_mut(pid)
                    .map(|session| session.info().go_version.clone())
                    .unwrap_or_default();
                eprintln!(
                    "ctxleak: PID {pid} exec'd {exe} ({version}); watching it now ({probes} probes)"
                );
                None
            }
            Err(NotWatched::NotGo) => Some(Ok(format!(
                "ctxleak: PID {pid} exec'd {exe}, which is not a Go program; detached"
            ))),
            Err(NotWatched::Gone) => Some(Ok(format!(
                "ctxleak: PID {pid} exec'd {exe}, then exited or exec'd again before ctxleak could read it; detached"
            ))),
            Err(NotWatched::Unreadable(error) | NotWatched::Failed(error)) => Some(Err(error
                .context(format!(
                    "PID {pid} exec'd {exe}, which ctxleak cannot watch"
                )))),
        };
    }
}

impl Hooks for Printer {
    /// The target exec'd: the program ctxleak watched is gone, the process is not. A Go
    /// program in its place is watched afresh, as the daemon does (its own executable, probes
    /// and counts); otherwise attach ends.
    fn execs(&mut self, watcher: &mut Watcher, pids: Vec<u32>) {
        let pid = self.pid;
        if !pids.contains(&pid) || !watcher.is_watched(pid) {
            return;
        }
        watcher.remove(pid);
        let (exe, watched) = match crate::discover::candidate(pid) {
            Ok(candidate) => (
                candidate.exe_path.display().to_string(),
                watcher.watch(pid, candidate.identity),
            ),
            Err(_) => ("another program".to_owned(), Err(NotWatched::Gone)),
        };
        self.execd_to(watcher, &exe, watched);
    }

    /// The target's exec (or its executable's probes) answered: `watched` says whether the
    /// new program is watched.
    fn attached(&mut self, watcher: &mut Watcher, attached: Attached) {
        if attached.pid == self.pid {
            let exe = attached.exe.display().to_string();
            let watched = attached.result.map(Some).map_err(NotWatched::from_add);
            self.execd_to(watcher, &exe, watched);
        }
    }

    fn every_second(&mut self, watcher: &mut Watcher) {
        if !self.summary {
            return;
        }
        let lost = watcher.events_lost();
        if let Some(session) = watcher.session_mut(self.pid) {
            println!("{}", session.summary_line(lost));
        }
    }

    fn leaks_changed(&mut self, _session: &Session, changes: &LeakChanges) {
        if let Some(report) = &changes.report
            && self.summary
            && !report.is_empty()
        {
            println!("{report}");
        }
    }
}
