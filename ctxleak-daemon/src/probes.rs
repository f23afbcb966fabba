//! Loads ctxleak's eBPF programs (embedded in the binary at build time) and attaches them to
//! a target process.

use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::path::Path;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLink, UProbeLinkId, UProbeScope};
use aya::programs::{BtfTracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use ctxleak_common::{
    COUNTERS_MAP, ContextChange, ContextEvent, Counter, EVENTS_MAP, EXECS_MAP, EventHeader,
    EventKind, GoroutineEvent, GoroutineKey, PARKS_MAP, PROG_CONTEXT_CANCELLED,
    PROG_CONTEXT_CREATED, PROG_CONTEXT_REGISTERED, PROG_FLOOR, PROG_FLOOR_SPIN,
    PROG_GOROUTINE_CREATED, PROG_GOROUTINE_ENQUEUED, PROG_GOROUTINE_EXITED, PROG_GOROUTINE_PARKED,
    PROG_PROCESS_EXEC, TARGETS_MAP, TargetConfig,
};
use tokio::io::unix::AsyncFd;

use crate::goexe::GoBinary;
use crate::goexe::disasm::NewGoroutineIn;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot load the eBPF programs")]
    Load(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the eBPF object has no {0}: the ctxleak binary is broken, rebuild it")]
    Missing(&'static str),
    #[error("{address:#x} in {path} is outside its loadable segments")]
    BadAddress { path: String, address: u64 },
    #[error("cannot attach a uprobe at file offset {offset:#x} of {path}")]
    Attach {
        path: String,
        offset: u64,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "cannot turn on the kernel's eBPF run statistics (BPF_ENABLE_STATS) for --probe-stats (it needs CAP_SYS_ADMIN, or leave --probe-stats out)"
    )]
    RunStats(#[source] aya::sys::SyscallError),
    #[error("cannot register PID {pid} with the eBPF programs")]
    Register {
        pid: u32,
        source: aya::maps::MapError,
    },
}

impl ProbeError {
    /// Whether the kernel refused for lack of privileges (EPERM/EACCES anywhere in the chain).
    /// Not when the verifier ran and rejected a program: it says EACCES for a bad memory
    /// access too, and its log is the cause to show.
    pub fn is_permission_denied(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = source {
            if let Some(aya::programs::ProgramError::LoadError { verifier_log, .. }) =
                error.downcast_ref::<aya::programs::ProgramError>()
                && !verifier_log.to_string().trim().is_empty()
            {
                return false;
            }
            if let Some(io) = error.downcast_ref::<std::io::Error>()
                && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
            {
                return true;
            }
            source = error.source();
        }
        false
    }
}

fn load_error(error: impl std::error::Error + Send + Sync + 'static) -> ProbeError {
    ProbeError::Load(Box::new(error))
}

/// Which probes `watch` attaches.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeMode {
    /// Also probe `runtime.gopark`, to know exactly since when each goroutine is blocked.
    pub park_times: bool,
    /// Attach the do-nothing program everywhere instead (benchmarks: the cost of the traps).
    pub floor: bool,
    /// With `floor`: programs that spin this many nanoseconds instead (benchmarks: what time
    /// inside a program costs the target).
    pub floor_spin_ns: u32,
    /// Leave the `context` probes out (goroutines only).
    pub no_contexts: bool,
    /// Leave the cancellation probe out: cancellations are read from memory
    /// ([`crate::session::Session::check_releases`]). The default (`--cancel-probe` unsets
    /// it).
    pub releases_from_memory: bool,
    /// Have the kernel count each program's runs and time (two clock reads per probe hit),
    /// exported as `ctxleak_probe_runs_total` and `ctxleak_probe_run_seconds_total`.
    pub run_stats: bool,
}

/// The probes of one executable file, until [`Probes::detach`].
pub struct Attachment {
    links: Vec<Link>,
    /// Places probed.
    points: usize,
}

/// One link of an [`Attachment`]: a `uprobe_multi` link of a program's every place in the
/// file (see [`crate::multi`]), or aya's perf-event link of one place.
enum Link {
    Multi(OwnedFd),
    Perf(&'static str, UProbeLinkId),
}

/// A link taken out of its [`Attachment`]: dropping it removes its probes (and waits for the
/// kernel: drop it off the event loop).
pub enum Detached {
    Multi(OwnedFd),
    Perf(UProbeLink),
}

impl Attachment {
    pub fn probe_count(&self) -> usize {
        self.points
    }

    /// Whether its links are `uprobe_multi` links (whose programs see every hit until the
    /// breakpoints are gone; a perf-event link's program goes before its breakpoint).
    pub fn is_multi(&self) -> bool {
        self.links.iter().any(|link| matches!(link, Link::Multi(_)))
    }
}

/// ctxleak's eBPF programs and maps, loaded. The watcher splits them: the maps stay on its
/// event loop (registering a process is a map update), the programs go to the thread that
/// attaches and detaches them ([`crate::prober`]), where the kernel's waits cannot stall it.
pub struct Probes {
    pub programs: Programs,
    pub maps: ProbeMaps,
}

/// The uprobe programs (and the exec tracepoint): what attaches to files.
pub struct Programs {
    ebpf: Ebpf,
    /// The same programs loaded for `uprobe_multi` links; None where the kernel cannot (then
    /// aya's perf-event links, removed one grace period after another).
    multi: Option<crate::multi::MultiPrograms>,
    /// Keeps the kernel's run statistics on while held ([`Programs::enable_run_stats`]).
    run_stats: Option<OwnedFd>,
}

/// The maps the programs read and count in: which processes are watched (and how), their
/// park times, and the kernel-side counters.
pub struct ProbeMaps {
    targets: BpfHashMap<MapData, u32, TargetConfig>,
    parks: BpfHashMap<MapData, GoroutineKey, u64>,
    counters: PerCpuArray<MapData, u64>,
}

/// What the kernel counted for one program since it was loaded (with run statistics on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramRuns {
    pub program: &'static str,
    pub runs: u64,
    pub run_time: std::time::Duration,
}

/// The uprobe programs, as [`Probes::program_runs`] reports them. The do-nothing `floor` is
/// the host's trap calibration ([`crate::calibrate`]); the spinning one is in the programs
/// only in the benchmarks' build (feature `bench-floor`).
const UPROBE_PROGRAMS: &[&str] = &[
    PROG_GOROUTINE_CREATED,
    PROG_GOROUTINE_ENQUEUED,
    PROG_GOROUTINE_EXITED,
    PROG_GOROUTINE_PARKED,
    PROG_CONTEXT_CREATED,
    PROG_CONTEXT_REGISTERED,
    PROG_CONTEXT_CANCELLED,
    PROG_FLOOR,
    #[cfg(feature = "bench-floor")]
    PROG_FLOOR_SPIN,
];

/// Probe events, readable from async code.
pub type EventStream = AsyncFd<RingBuf<MapData>>;

impl Probes {
    /// Loads the programs into the kernel. Must run inside a tokio runtime: the eBPF log
    /// is drained by a task (if the logger were dropped, its map would close and the programs
    /// would fail to load).
    ///
    /// `ring_bytes` sizes the event ring buffer (a power of two, at least a page): events that
    /// do not fit are counted as lost and the live set is resynchronised from memory.
    pub fn load(ring_bytes: u32) -> Result<(Self, EventStream), ProbeError> {
        let ring_size = u64::from(ring_bytes);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(EVENTS_MAP, ring_bytes)
            // The programs compare the ring's fill level with its size on every event.
            .override_global("EVENTS_RING_SIZE", &ring_size, true)
            .load(EBPF_OBJECT)
            .map_err(load_error)?;
        // Before the logger and the watcher take maps out of `ebpf`.
        let maps: Vec<(String, OwnedFd)> = ebpf
            .maps()
            .filter_map(|(name, map)| Some((name.to_owned(), map_fd(map)?)))
            .collect();
        match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => {
                let mut logger = crate::readable::watch_readable(logger).map_err(load_error)?;
                tokio::spawn(async move {
                    while let Ok(mut guard) = logger.readable_mut().await {
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                });
            }
            Err(error) => tracing::debug!("no eBPF logger: {error}"),
        }
        let events = ebpf
            .take_map(EVENTS_MAP)
            .ok_or(ProbeError::Missing(EVENTS_MAP))?;
        let events = RingBuf::try_from(events).map_err(load_error)?;
        let events = crate::readable::watch_readable(events).map_err(load_error)?;
        let counters = ebpf
            .take_map(COUNTERS_MAP)
            .ok_or(ProbeError::Missing(COUNTERS_MAP))?;
        let counters = PerCpuArray::try_from(counters).map_err(load_error)?;
        let targets = ebpf
            .take_map(TARGETS_MAP)
            .ok_or(ProbeError::Missing(TARGETS_MAP))?;
        let targets = BpfHashMap::try_from(targets).map_err(load_error)?;
        let parks = ebpf
            .take_map(PARKS_MAP)
            .ok_or(ProbeError::Missing(PARKS_MAP))?;
        let parks = BpfHashMap::try_from(parks).map_err(load_error)?;
        for name in UPROBE_PROGRAMS {
            uprobe(&mut ebpf, name)?.load().map_err(load_error)?;
        }
        let multi = match crate::multi::MultiPrograms::load(EBPF_OBJECT, &maps, UPROBE_PROGRAMS) {
            Ok(multi) => Some(multi),
            Err(error) => {
                tracing::debug!("no uprobe_multi links (perf-event links instead): {error:#}");
                None
            }
        };
        tracing::debug!(
            events_fd = events.get_ref().as_raw_fd(),
            multi = multi.is_some(),
            "eBPF programs loaded"
        );
        Ok((
            Self {
                programs: Programs {
                    ebpf,
                    multi,
                    run_stats: None,
                },
                maps: ProbeMaps {
                    targets,
                    parks,
                    counters,
                },
            },
            events,
        ))
    }

    /// [`Programs::enable_run_stats`].
    pub fn enable_run_stats(&mut self) -> Result<(), ProbeError> {
        self.programs.enable_run_stats()
    }

    /// [`Probes::load`], with a refusal for lack of privileges said as such (with the fix).
    pub fn load_or_explain(ring_bytes: u32) -> anyhow::Result<(Self, EventStream)> {
        Self::load(ring_bytes).map_err(|error| {
            if error.is_permission_denied() {
                anyhow::Error::new(crate::target::TargetError::Privileges {
                    action: "load eBPF programs".into(),
                })
            } else {
                anyhow::Error::new(error)
            }
        })
    }
}

impl Programs {
    /// Turns on the kernel's per-program run statistics until these probes are dropped. They
    /// cost two clock reads per probe hit, which is why they are off by default.
    pub fn enable_run_stats(&mut self) -> Result<(), ProbeError> {
        if self.run_stats.is_none() {
            self.run_stats = Some(
                aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(ProbeError::RunStats)?,
            );
        }
        Ok(())
    }

    /// Runs and run time of each uprobe program that ran at all: empty unless run statistics
    /// are on (here or system-wide, `kernel.bpf_stats_enabled`).
    pub fn program_runs(&mut self) -> Vec<ProgramRuns> {
        UPROBE_PROGRAMS
            .iter()
            .filter_map(|program| {
                let info = uprobe(&mut self.ebpf, program).ok()?.info().ok()?;
                let (multi_runs, multi_time) = self
                    .multi
                    .as_ref()
                    .and_then(|multi| multi.runs(program))
                    .unwrap_or_default();
                let runs = info.run_count() + multi_runs;
                (runs > 0).then(|| ProgramRuns {
                    program,
                    runs,
                    run_time: info.run_time() + multi_time,
                })
            })
            .collect()
    }

    /// Attaches the probes to an executable file, reached as `exe` (use an
    /// [`ExeFile`](crate::target::ExeFile)'s path: it works across mount namespaces, and
    /// names the file that was read even if the process it came from exec'd since). A uprobe belongs to the file, not to a process: with
    /// `only` None it is hit in every process running the file, and the programs report
    /// the registered ones; with `only` set, the kernel traps in that process alone. Nothing
    /// stays attached on error.
    pub fn attach(
        &mut self,
        exe: &Path,
        binary: &GoBinary,
        mode: ProbeMode,
        only: Option<u32>,
    ) -> Result<Attachment, ProbeError> {
        let scope = scope(only);
        // An architecture whose probes ctxleak cannot place yet: memory only, nothing attached.
        let Some(probes) = &binary.probes else {
            return Ok(Attachment {
                links: Vec::new(),
                points: 0,
            });
        };
        let parked = mode
            .park_times
            .then_some((PROG_GOROUTINE_PARKED, probes.goroutine_parked));
        let contexts = probes
            .contexts
            .as_ref()
            .filter(|_| !mode.no_contexts)
            .map(|c| {
                [
                    (PROG_CONTEXT_CREATED, c.created),
                    (PROG_CONTEXT_REGISTERED, c.registered),
                    (PROG_CONTEXT_CANCELLED, c.cancelled),
                ]
            })
            .into_iter()
            .flatten()
            .filter(|(program, _)| {
                !(mode.releases_from_memory && *program == PROG_CONTEXT_CANCELLED)
            });
        let points = probes
            .goroutine_created
            .iter()
            .map(|site| {
                let program = match site.register {
                    NewGoroutineIn::Result => PROG_GOROUTINE_CREATED,
                    NewGoroutineIn::SecondArgument => PROG_GOROUTINE_ENQUEUED,
                };
                (program, site.address)
            })
            .chain([(PROG_GOROUTINE_EXITED, probes.goroutine_exited)])
            .chain(parked)
            .chain(contexts);
        let mut places: Vec<(&'static str, u64)> = Vec::new();
        for (program, address) in points {
            let program = match (mode.floor, mode.floor_spin_ns) {
                (false, _) => program,
                (true, 0) => PROG_FLOOR,
                (true, _) => PROG_FLOOR_SPIN,
            };
            let offset = binary
                .file_offset(address)
                .ok_or_else(|| ProbeError::BadAddress {
                    path: binary.path.display().to_string(),
                    address,
                })?;
            places.push((program, offset));
        }
        let mut attachment = Attachment {
            links: Vec::new(),
            points: places.len(),
        };
        if let Some(multi) = &self.multi {
            match attach_multi(multi, &places, exe, only, &mut attachment) {
                Ok(()) => return Ok(attachment),
                // The file or the process went away: perf-event links would fail the same.
                Err(error) if matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
                    drop(self.detach(attachment));
                    return Err(ProbeError::Attach {
                        path: binary.path.display().to_string(),
                        offset: places.first().map_or(0, |(_, offset)| *offset),
                        source: Box::new(error),
                    });
                }
                Err(error) => {
                    tracing::debug!(
                        "uprobe_multi links refused, perf-event links from now on: {error}"
                    );
                    drop(self.detach(attachment));
                    self.multi = None;
                    attachment = Attachment {
                        links: Vec::new(),
                        points: places.len(),
                    };
                }
            }
        }
        for (program, offset) in places {
            let attached = uprobe(&mut self.ebpf, program).and_then(|probe| {
                probe
                    .attach(UProbeAttachLocation::AbsoluteOffset(offset), exe, scope)
                    .map_err(attach_error(&binary.path, offset))
            });
            match attached {
                Ok(link) => attachment.links.push(Link::Perf(program, link)),
                Err(error) => {
                    drop(self.detach(attachment));
                    return Err(error);
                }
            }
        }
        Ok(attachment)
    }

    /// Attaches the do-nothing program at `offset` of `exe`, trapping in process `pid` only:
    /// the bare price of a trap, for [`crate::calibrate`]. Dropping the link detaches it.
    pub fn attach_floor(
        &mut self,
        exe: &Path,
        offset: u64,
        pid: u32,
    ) -> Result<UProbeLink, ProbeError> {
        let program = uprobe(&mut self.ebpf, PROG_FLOOR)?;
        let link = program
            .attach(
                UProbeAttachLocation::AbsoluteOffset(offset),
                exe,
                scope(Some(pid)),
            )
            .map_err(attach_error(exe, offset))?;
        program.take_link(link).map_err(attach_error(exe, offset))
    }

    /// Removes the probes of one executable. Unregistering a uprobe waits for the kernel to
    /// be done with it (about 100 ms each, measured): the links are handed back so that the
    /// caller can drop them away from its event loop.
    #[must_use = "dropping the links detaches the probes; drop them off the event loop"]
    pub fn detach(&mut self, attachment: Attachment) -> Vec<Detached> {
        attachment
            .links
            .into_iter()
            .filter_map(|link| match link {
                Link::Multi(fd) => Some(Detached::Multi(fd)),
                Link::Perf(program, link) => Some(Detached::Perf(
                    uprobe(&mut self.ebpf, program).ok()?.take_link(link).ok()?,
                )),
            })
            .collect()
    }

    /// Loads and attaches the exec tracepoint (`ctxleak daemon`), and hands over its ring of
    /// [`ctxleak_common::ExecEvent`]s. A BTF tracepoint needs no tracefs.
    pub fn watch_execs(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let btf = aya::Btf::from_sys_fs().map_err(load_error)?;
        let program: &mut BtfTracePoint = self
            .ebpf
            .program_mut(PROG_PROCESS_EXEC)
            .ok_or(ProbeError::Missing(PROG_PROCESS_EXEC))?
            .try_into()
            .map_err(|_| ProbeError::Missing(PROG_PROCESS_EXEC))?;
        program
            .load("sched_process_exec", &btf)
            .map_err(load_error)?;
        program.attach().map_err(load_error)?;
        let execs = self
            .ebpf
            .take_map(EXECS_MAP)
            .ok_or(ProbeError::Missing(EXECS_MAP))?;
        RingBuf::try_from(execs).map_err(load_error)
    }
}

impl ProbeMaps {
    /// Registers `pid` with the programs: from now on the probes in its executable report its
    /// events (a probe hit in a process without an entry does nothing).
    pub fn register(
        &mut self,
        pid: u32,
        binary: &GoBinary,
        bias: u64,
        mode: ProbeMode,
    ) -> Result<(), ProbeError> {
        let (lo, hi) = binary.context_probes().map_or((0, 0), |c| c.text);
        let config = TargetConfig {
            offsets: binary.g_layout.probe_offsets(),
            park_times: u32::from(mode.park_times),
            floor_spin_ns: mode.floor_spin_ns,
            context_text_lo: lo.wrapping_add(bias),
            context_text_hi: hi.wrapping_add(bias),
        };
        self.targets
            .insert(pid, config, 0)
            .map_err(|source| ProbeError::Register { pid, source })
    }

    /// Forgets `pid`: its probe hits are ignored from now on, and its park times dropped
    /// (with `park_times`; otherwise the map is empty and not walked).
    pub fn unregister(&mut self, pid: u32, park_times: bool) {
        let _ = self.targets.remove(&pid);
        if !park_times {
            return;
        }
        let stale: Vec<GoroutineKey> = self
            .parks
            .keys()
            .filter_map(Result::ok)
            .filter(|key| key.pid == pid)
            .collect();
        for key in stale {
            let _ = self.parks.remove(&key);
        }
    }

    /// When each goroutine of `pid` last parked (`bpf_ktime_get_ns`), by goid: empty unless
    /// park timing is on.
    pub fn park_times(&self, pid: u32) -> std::collections::HashMap<u64, u64> {
        self.parks
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, _)| key.pid == pid)
            .map(|(key, ktime)| (key.goid, ktime))
            .collect()
    }

    /// A kernel-side counter, summed over CPUs.
    pub fn counter(&self, counter: Counter) -> u64 {
        self.counters
            .get(&(counter as u32), 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    }
}

/// The eBPF object, built for the BPF target by build.rs: loaded by aya, and again for
/// `uprobe_multi` links ([`crate::multi`]).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ctxleak"));

/// A descriptor of one of aya's maps, for relocating the programs loaded again for
/// `uprobe_multi` links; None for kinds of map ctxleak's programs do not use.
fn map_fd(map: &aya::maps::Map) -> Option<OwnedFd> {
    use aya::maps::Map;
    let data = match map {
        Map::Array(data)
        | Map::HashMap(data)
        | Map::LruHashMap(data)
        | Map::PerCpuArray(data)
        | Map::RingBuf(data) => data,
        _ => return None,
    };
    data.fd().as_fd().try_clone_to_owned().ok()
}

/// Links each program at all its `places` (program, file offset) with one `uprobe_multi`
/// link, pushing the links into `attachment` as they are made.
fn attach_multi(
    multi: &crate::multi::MultiPrograms,
    places: &[(&'static str, u64)],
    exe: &Path,
    only: Option<u32>,
    attachment: &mut Attachment,
) -> std::io::Result<()> {
    // Each program's places, in the order the programs first come.
    let mut by_program: Vec<(&'static str, Vec<u64>)> = Vec::new();
    for &(program, offset) in places {
        match by_program.iter_mut().find(|(p, _)| *p == program) {
            Some((_, offsets)) => offsets.push(offset),
            None => by_program.push((program, vec![offset])),
        }
    }
    for (program, offsets) in by_program {
        let link = multi.attach(program, exe, &offsets, only.filter(|&pid| pid != 0))?;
        attachment.links.push(Link::Multi(link));
    }
    Ok(())
}

/// Trapping in process `only` alone, or (None, or 0) in every process running the file.
fn scope(only: Option<u32>) -> UProbeScope {
    only.and_then(std::num::NonZeroU32::new)
        .map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess)
}

/// The error of attaching at `offset` of the file at `path`.
fn attach_error(
    path: &Path,
    offset: u64,
) -> impl Fn(aya::programs::ProgramError) -> ProbeError + '_ {
    move |source| ProbeError::Attach {
        path: path.display().to_string(),
        offset,
        source: Box::new(source),
    }
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, ProbeError> {
    ebpf.program_mut(name)
        .ok_or(ProbeError::Missing(name))?
        .try_into()
        .map_err(|_| ProbeError::Missing(name))
}

/// Decodes a record into `T`, of which it may be a prefix (at least `min` bytes: the kinds
/// that leave trailing fields out); what it leaves out is zero. `None` if it is shorter.
fn decode_prefix<T: aya::Pod + Default>(bytes: &[u8], min: usize) -> Option<T> {
    if bytes.len() < min {
        return None;
    }
    let mut value = T::default();
    let len = bytes.len().min(size_of::<T>());
    // SAFETY: T is plain #[repr(C)] integers (Pod), so any bytes make a valid T; `len` is
    // within both the source and the destination.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            std::ptr::from_mut(&mut value).cast::<u8>(),
            len,
        );
    }
    Some(value)
}

/// One ring-buffer record of either shape.
#[derive(Clone, Copy, Debug)]
pub enum Record {
    Goroutine(GoroutineEvent),
    Context(ContextEvent),
}

/// Decodes a record by its leading `kind`; `None` for anything our programs never send, or a
/// record shorter than its kind's.
pub fn decode_record(bytes: &[u8]) -> Option<Record> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    match EventKind::from_u32(kind)? {
        EventKind::Created => decode_prefix(bytes, GoroutineEvent::SIZE).map(Record::Goroutine),
        EventKind::Exited => decode_prefix(bytes, EventHeader::SIZE).map(Record::Goroutine),
        EventKind::ContextCreated => decode_prefix(bytes, ContextEvent::SIZE).map(Record::Context),
        EventKind::ContextRegistered | EventKind::ContextCancelled => {
            decode_prefix(bytes, ContextChange::SIZE).map(Record::Context)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(verifier_log: &str) -> ProbeError {
        load_error(aya::programs::ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(libc::EACCES),
            verifier_log: aya_obj::VerifierLog::new(verifier_log.into()),
        })
    }

    #[test]
    fn a_verifier_rejection_is_not_a_lack_of_privileges() {
        assert!(refused("").is_permission_denied());
        let rejected = refused("257: (79) r2 = *(u64 *)(r3 +8)\ninvalid access to map value");
        assert!(!rejected.is_permission_denied());
    }
}
