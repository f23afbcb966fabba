//! A process ctxleak watches: how it is found, checked and noticed when it goes away.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::PathBuf;

use tokio::io::unix::AsyncFd;

use crate::goexe::{GoBinary, GoBinaryError};

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
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if !has(CAP_SYS_ADMIN) || !has(CAP_SYS_PTRACE) {
        return Err(TargetError::Privileges {
            action: format!("load eBPF programs and read the memory of PID {pid}"),
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

    /// Whether the process has exited, without waiting.
    pub fn has_exited(&self) -> bool {
        self.exits_within(0)
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

/// The executable of a live process, opened through `/proc/PID/exe` (which reaches it even
/// in another mount namespace).
pub struct TargetExe {
    /// `/proc/PID/exe`: where uprobes attach and the file is read.
    pub link: PathBuf,
    /// The path the process was started from, for people and labels.
    pub path: PathBuf,
    pub binary: GoBinary,
}

impl TargetExe {
    pub fn open(pid: u32) -> Result<Self, TargetError> {
        let link = PathBuf::from(format!("/proc/{pid}/exe"));
        let path = std::fs::read_link(&link).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => TargetError::NoSuchProcess { pid },
            io::ErrorKind::PermissionDenied => TargetError::Privileges {
                action: format!("read the executable of PID {pid}"),
            },
            _ => TargetError::Io { pid, source },
        })?;
        let binary =
            GoBinary::open(&link, &path).map_err(|source| TargetError::Binary { pid, source })?;
        Ok(Self { link, path, binary })
    }
}
