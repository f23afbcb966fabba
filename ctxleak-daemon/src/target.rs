//! A process ctxleak watches: how it is found, checked and noticed when it goes away.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;

use crate::cgroup::ContainerInfo;
use crate::discover::ExeIdentity;
use crate::goexe::{GoBinary, GoBinaryError};
use crate::procmem::{self, ProcessMemory};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no process with PID {pid}: check the PID (ps -e)")]
    NoSuchProcess { pid: u32 },
    #[error("PID {pid} has no executable file (a kernel thread?): give the PID of a Go process")]
    NoExecutable { pid: u32 },
    #[error("PID {pid} exited while ctxleak was attaching: nothing to watch")]
    ExitedDuringAttach { pid: u32 },
    #[error(
        "ctxleak lacks the privileges to {action}: run it as root (sudo), or with the capabilities CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE (and CAP_DAC_READ_SEARCH for processes of other users)"
    )]
    Privileges { action: String },
    #[error("PID {pid}: {source}")]
    Binary { pid: u32, source: GoBinaryError },
    #[error("cannot watch PID {pid}: {source}")]
    Io { pid: u32, source: io::Error },
}

/// Capability numbers from linux/capability.h.
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

/// Fails early, with the fix, when this process cannot load eBPF programs, attach uprobes and
/// read another process's memory. CAP_BPF and CAP_PERFMON were enough for uprobes until Linux
/// 6.16 (and stable kernels patched since July 2025) went back to requiring CAP_SYS_ADMIN for
/// them (commit ba677dbe77af), which also covers BPF and perf; CAP_SYS_PTRACE reads memory.
pub fn check_privileges(pid: u32) -> Result<(), TargetError> {
    check_privileges_for(&format!(
        "load eBPF programs and read the memory of PID {pid}"
    ))
}

/// [`check_privileges`], saying what for.
pub fn check_privileges_for(action: &str) -> Result<(), TargetError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if !has(CAP_SYS_ADMIN) || !has(CAP_SYS_PTRACE) {
        return Err(TargetError::Privileges {
            action: action.to_owned(),
        });
    }
    Ok(())
}

/// A pidfd: readable once the process has exited (even before it is reaped).
pub struct ProcessHandle {
    pid: u32,
    fd: AsyncFd<OwnedFd>,
}

impl ProcessHandle {
    pub fn open(pid: u32) -> Result<Self, TargetError> {
        let raw_pid = libc::pid_t::try_from(pid).map_err(|_| TargetError::NoSuchProcess { pid })?;
        if raw_pid <= 0 {
            return Err(TargetError::NoSuchProcess { pid });
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0) };
        if fd < 0 {
            let error = io::Error::last_os_error();
            return Err(match error.raw_os_error() {
                Some(libc::ESRCH) => TargetError::NoSuchProcess { pid },
                _ => TargetError::Io { pid, source: error },
            });
        }
        // SAFETY: the syscall returned a fresh fd that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let fd = crate::readable::watch_readable(fd)
            .map_err(|source| TargetError::Io { pid, source })?;
        Ok(Self { pid, fd })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A second handle on the same process (the pidfd duplicated, so it can never name a
    /// later process that reuses the PID).
    pub fn try_clone(&self) -> Result<Self, TargetError> {
        let pid = self.pid;
        let fd = self
            .fd
            .get_ref()
            .try_clone()
            .and_then(crate::readable::watch_readable)
            .map_err(|source| TargetError::Io { pid, source })?;
        Ok(Self { pid, fd })
    }

    /// Whether the process has exited or is exiting: it was gone, or went within 250 ms
    /// (its last threads can take that long once its memory is gone).
    pub fn is_exiting(&self) -> bool {
        self.exits_within(250)
    }

    /// Whether the process exits within `timeout_ms`. A pidfd turns readable only once every
    /// thread is gone, a little after the process loses its executable and memory.
    fn exits_within(&self, timeout_ms: i32) -> bool {
        let mut poll = libc::pollfd {
            fd: self.fd.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, timeout_ms) };
        ready > 0 && poll.revents & libc::POLLIN != 0
    }

    /// Completes when the process exits.
    pub async fn exited(&self) {
        // A readiness error means the fd is unusable; treat it as the process being gone.
        let _ = self.fd.readable().await;
    }

    /// Replaces an error met while attaching with "it exited" when that is what happened:
    /// the process existed when its pidfd was opened, so an error that a vanished process
    /// explains is checked against its exit (waiting a moment for its last threads).
    pub fn explain(&self, error: TargetError) -> TargetError {
        if self.exits_within(250) {
            return TargetError::ExitedDuringAttach { pid: self.pid };
        }
        match error {
            // Still there, yet no /proc/PID/exe: a process without an executable.
            TargetError::NoSuchProcess { pid } => TargetError::NoExecutable { pid },
            error => error,
        }
    }
}

/// A Go process read and ready to watch: its executable parsed (or shared with other
/// processes running the same file), its memory open, its load address known.
pub struct Prepared {
    pub process: ProcessHandle,
    /// `/proc/PID/exe`: where uprobes attach (it reaches the file even in another mount
    /// namespace) and where the executable is read.
    pub link: PathBuf,
    /// The path the process was started from, for people and labels.
    pub path: PathBuf,
    pub identity: ExeIdentity,
    pub binary: Arc<GoBinary>,
    pub memory: ProcessMemory,
    /// Load bias of a PIE executable (0 otherwise).
    pub bias: u64,
    pub container: ContainerInfo,
}

/// Reads what watching `process` needs. `known` returns the parsed executable when another
/// watched process runs the same file. Errors that its exit explains say so
/// ([`TargetError::ExitedDuringAttach`]).
pub fn prepare(
    process: ProcessHandle,
    known: impl FnOnce(ExeIdentity) -> Option<Arc<GoBinary>>,
) -> Result<Prepared, TargetError> {
    let pid = process.pid();
    let link = PathBuf::from(format!("/proc/{pid}/exe"));
    let path_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => TargetError::NoSuchProcess { pid },
        io::ErrorKind::PermissionDenied => TargetError::Privileges {
            action: format!("read the executable of PID {pid}"),
        },
        _ => TargetError::Io { pid, source },
    };
    let path = std::fs::read_link(&link).map_err(|error| process.explain(path_error(error)))?;
    let identity = std::fs::metadata(&link)
        .map(|meta| ExeIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
        })
        .map_err(|error| process.explain(path_error(error)))?;
    let binary = match known(identity) {
        Some(binary) => binary,
        None => Arc::new(
            GoBinary::open(&link, &path)
                .map_err(|source| process.explain(TargetError::Binary { pid, source }))?,
        ),
    };
    let memory = ProcessMemory::open(pid).map_err(|error| {
        process.explain(match error.io_error().map(io::Error::kind) {
            Some(io::ErrorKind::PermissionDenied) => TargetError::Privileges {
                action: format!("read the memory of PID {pid}"),
            },
            _ => TargetError::Io {
                pid,
                source: io::Error::other(error.to_string()),
            },
        })
    })?;
    let bias = if binary.is_pie {
        let first = binary.first_segment_address().unwrap_or(0);
        procmem::load_bias(pid, &link, first).map_err(|error| {
            process.explain(TargetError::Io {
                pid,
                source: io::Error::other(error.to_string()),
            })
        })?
    } else {
        0
    };
    // Outside a container, or on a host without cgroups, the labels stay empty.
    let container = crate::cgroup::read(pid).unwrap_or_default();
    Ok(Prepared {
        process,
        link,
        path,
        identity,
        binary,
        memory,
        bias,
        container,
    })
}
