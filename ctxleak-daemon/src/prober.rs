//! The thread that owns the eBPF programs and attaches and detaches the uprobes, so that the
//! kernel's waits never stall the event loop.
//!
//! Registering a uprobe takes the kernel's uprobe and event mutexes, which the removal of
//! any other probe holds across RCU grace periods: an attach that takes 10 ms on an idle host
//! took up to 0.73 s under process churn (issue #20), and the events, censuses and exits of
//! every other process waited meanwhile. So the watcher hands each attach and detach to this
//! thread as a job and goes on; the answer comes back on a channel it polls with the rest
//! ([`Done`]). Jobs run in order, so a detach and a later attach of the same file cannot
//! overlap: the attach waits (here, not on the loop) until the links of the detach are gone,
//! since both sets of probes would fire at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::discover::ExeIdentity;
use crate::goexe::GoBinary;
use crate::probes::{Attachment, Detached, ProbeError, ProbeMode, ProgramRuns, Programs};
use crate::target::ExeFile;

/// An answer from the prober thread.
pub enum Done {
    /// The probes of an executable file are in place (or could not be placed).
    Attached {
        identity: ExeIdentity,
        result: Result<Attachment, ProbeError>,
    },
    /// What the kernel counted for each program ([`Prober::program_runs`]).
    ProgramRuns(Vec<ProgramRuns>),
    /// An executable's probes are gone. `trapping`: about how long they kept trapping after
    /// their programs stopped seeing the hits (see [`drop_at_once`]): hits the budget could
    /// not count, which [`crate::budget::Bucket::charge_removal`] pays for.
    Detached {
        identity: ExeIdentity,
        trapping: Duration,
    },
}

enum Job {
    Attach {
        identity: ExeIdentity,
        exe: Arc<ExeFile>,
        binary: Arc<GoBinary>,
        mode: ProbeMode,
        only: Option<u32>,
    },
    Detach {
        identity: ExeIdentity,
        attachment: Attachment,
    },
    ProgramRuns,
    /// Answered when the thread reaches it, between jobs (with `settle`: once every removal
    /// under way has finished too).
    Barrier {
        settle: bool,
        reached: std_mpsc::SyncSender<()>,
    },
}

/// The handle the watcher keeps: jobs go in, [`Done`]s come out of the receiver that
/// [`Prober::spawn`] returned.
pub struct Prober {
    jobs: Option<std_mpsc::Sender<Job>>,
    /// Set when ctxleak stops: attaches still queued are skipped.
    stopping: Arc<AtomicBool>,
}

impl Prober {
    /// Starts the thread with the programs.
    pub fn spawn(programs: Programs) -> std::io::Result<(Self, mpsc::UnboundedReceiver<Done>)> {
        let (jobs, queue) = std_mpsc::channel();
        let (done, answers) = mpsc::unbounded_channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let skip = stopping.clone();
        std::thread::Builder::new()
            .name("ctxleak-prober".into())
            .spawn(move || serve(programs, &queue, &done, &skip))?;
        Ok((
            Self {
                jobs: Some(jobs),
                stopping,
            },
            answers,
        ))
    }

    fn send(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The thread ends only when this handle goes: a failed send means it panicked,
            // and the job's answer never comes, which the watcher outlives.
            let _ = jobs.send(job);
        }
    }

    /// Attaches the probes to `exe` in the background: [`Done::Attached`] says how it went.
    pub fn attach(
        &self,
        identity: ExeIdentity,
        exe: Arc<ExeFile>,
        binary: Arc<GoBinary>,
        mode: ProbeMode,
        only: Option<u32>,
    ) {
        self.send(Job::Attach {
            identity,
            exe,
            binary,
            mode,
            only,
        });
    }

    /// Removes an executable's probes in the background.
    pub fn detach(&self, identity: ExeIdentity, attachment: Attachment) {
        self.send(Job::Detach {
            identity,
            attachment,
        });
    }

    /// Asks for the programs' run statistics: [`Done::ProgramRuns`] brings them.
    pub fn program_runs(&self) {
        self.send(Job::ProgramRuns);
    }

    /// Waits up to `within` for the thread to be done with every job sent before (with
    /// `settle`, also for the removals they started); false if it was not in time.
    fn barrier(&self, settle: bool, within: Duration) -> bool {
        let (reached, answer) = std_mpsc::sync_channel(1);
        self.send(Job::Barrier { settle, reached });
        let wait = || answer.recv_timeout(within).is_ok();
        match tokio::runtime::Handle::try_current() {
            // Inside the runtime: let its other tasks (the HTTP endpoint) run meanwhile.
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// Ends the thread as ctxleak stops, and with it every probe, without waiting for the
    /// kernel: attaches still queued are skipped, the one under way finishes (up to
    /// `within`), then every link is handed to the helper process that outlives ctxleak
    /// ([`crate::release`]). Without the helper, the probes are removed here, all at once.
    pub fn stop(&mut self, attachments: Vec<(ExeIdentity, Attachment)>, within: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        // Between jobs from then on: a link made after the hand-over would be this process's
        // last reference, and its exit would wait for the kernel to remove it.
        if !self.barrier(false, within) {
            tracing::debug!("the prober is still attaching; stopping without it");
        }
        match crate::release::hand_over() {
            Ok(()) => {}
            Err(error) => {
                tracing::debug!("cannot start the helper that removes the probes: {error}");
                for (identity, attachment) in attachments {
                    self.detach(identity, attachment);
                }
                // Behind the detaches: waits for every removal to finish.
                let _ = self.barrier(true, Duration::from_secs(3600));
            }
        }
        // The thread ends when it finds the queue closed; its links go with it, quickly now
        // that the helper holds them too.
        self.jobs = None;
    }
}

/// The thread's loop: one job after another until the watcher's handle goes.
fn serve(
    mut programs: Programs,
    queue: &std_mpsc::Receiver<Job>,
    done: &mpsc::UnboundedSender<Done>,
    stopping: &AtomicBool,
) {
    // Executables whose probes a thread is removing.
    let mut detaching: HashMap<ExeIdentity, std::thread::JoinHandle<()>> = HashMap::new();
    while let Ok(job) = queue.recv() {
        match job {
            Job::Attach {
                identity,
                exe,
                binary,
                mode,
                only,
            } => {
                if stopping.load(Ordering::SeqCst) {
                    continue;
                }
                // Probes of this file still being removed would fire beside the new ones, and
                // every event would come twice: let them go first.
                if let Some(thread) = detaching.remove(&identity) {
                    let _ = thread.join();
                }
                let result = programs.attach(&exe.path(), &binary, mode, only);
                let _ = done.send(Done::Attached { identity, result });
            }
            Job::Detach {
                identity,
                attachment,
            } => {
                let multi = attachment.is_multi();
                let links = programs.detach(attachment);
                detaching.retain(|_, thread| !thread.is_finished());
                let done = done.clone();
                let thread = std::thread::spawn(move || {
                    let gone = drop_at_once(links);
                    let trapping = if multi {
                        // Every link's breakpoints go after the same grace period, before
                        // the first link's release returns (it then waits once more).
                        gone.iter().min().copied()
                    } else {
                        // One after another: the k-th link's probe trapped until it went.
                        (!gone.is_empty())
                            .then(|| gone.iter().sum::<Duration>() / gone.len() as u32)
                    };
                    let _ = done.send(Done::Detached {
                        identity,
                        trapping: trapping.unwrap_or_default(),
                    });
                });
                if let Some(earlier) = detaching.insert(identity, thread) {
                    let _ = earlier.join();
                }
            }
            Job::ProgramRuns => {
                let _ = done.send(Done::ProgramRuns(programs.program_runs()));
            }
            Job::Barrier { settle, reached } => {
                if settle {
                    for (_, thread) in detaching.drain() {
                        let _ = thread.join();
                    }
                }
                let _ = reached.send(());
            }
        }
    }
}

/// At most this many threads remove probes at once when ctxleak stops (each waits for the
/// kernel on its share of the probes).
const MAX_DETACH_THREADS: usize = 64;

/// Removes probes at once, one thread each (up to [`MAX_DETACH_THREADS`]), and returns when
/// all are gone, with how long each thread took from the start. A `uprobe_multi` link's
/// release takes its breakpoints out after one RCU grace period and waits for another: in
/// parallel, the first waits overlap. Perf-event links go one after another whatever the
/// threads (the kernel removes them under one mutex, a grace period each: 0.1 s apiece when
/// idle, more on a busy host), and each one's program goes before its breakpoint does.
fn drop_at_once(links: Vec<Detached>) -> Vec<Duration> {
    let started = std::time::Instant::now();
    let threads = links.len().min(MAX_DETACH_THREADS);
    let mut shares: Vec<Vec<Detached>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, link) in links.into_iter().enumerate() {
        shares[index % threads].push(link);
    }
    let threads: Vec<_> = shares
        .into_iter()
        .map(|share| {
            std::thread::spawn(move || {
                drop(share);
                started.elapsed()
            })
        })
        .collect();
    threads
        .into_iter()
        .filter_map(|thread| thread.join().ok())
        .collect()
}
