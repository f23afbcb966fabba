//! A process ctxleak watches: how it is found, checked and noticed when it goes away.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
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
        "PID {pid} exec'd another program ({exe}) while ctxleak attached, so what ctxleak read no longer matches it: attach again to watch the new program (if it is a Go program)"
    )]
    ExecdDuringAttach { pid: u32, exe: String },
    #[error(
        "ctxleak lacks the privileges to {action}: run it as root (sudo), or with the capabilities CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE (and CAP_DAC_READ_SEARCH for processes of other users)"
    )]
    Privileges { action: String },
    #[error("PID {pid}")]
    Binary { pid: u32, source: GoBinaryError },
    #[error("cannot watch PID {pid}")]
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
    /// The executable it ran when the handle was opened (None: it had none), to tell an
    /// exec from other errors while attaching.
    exe: Option<ExeIdentity>,
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
        let exe = ExeIdentity::of_process(pid).ok();
        Ok(Self { pid, fd, exe })
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
        Ok(Self {
            pid,
            fd,
            exe: self.exe,
        })
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

    /// Replaces an error met while attaching with "it exited" or "it exec'd" when that is
    /// what happened: the process existed when its pidfd was opened, so an error that a
    /// vanished process explains is checked against its exit (waiting a moment for its last
    /// threads), then against the file it runs. An exec of the same file is not seen here
    /// (the exec events are for that).
    pub fn explain(&self, error: TargetError) -> TargetError {
        let pid = self.pid;
        if self.exits_within(250) {
            return TargetError::ExitedDuringAttach { pid };
        }
        if let Some(before) = self.exe
            && ExeIdentity::of_process(pid).is_ok_and(|now| now != before)
        {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .map_or_else(|_| "?".to_owned(), |path| path.display().to_string());
            return TargetError::ExecdDuringAttach { pid, exe };
        }
        match error {
            // Still there, yet no /proc/PID/exe: a process without an executable.
            TargetError::NoSuchProcess { pid } => TargetError::NoExecutable { pid },
            error => error,
        }
    }
}

/// An executable file held open, reached as `/proc/self/fd/N`: what is read and probed
/// through it is this file whatever the process it came from runs by then (after an exec,
/// `/proc/PID/exe` names the new program: probes at the old one's offsets would land in it),
/// in whichever mount namespace it lives.
pub struct ExeFile(std::fs::File);

impl ExeFile {
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
    }
}

/// A Go process read and ready to watch: its executable parsed (or shared with other
/// processes running the same file), its memory open, its load address known.
pub struct Prepared {
    pub process: ProcessHandle,
    /// The executable, opened through `/proc/PID/exe`: where uprobes attach (shared with the
    /// thread that attaches them).
    pub exe: Arc<ExeFile>,
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
    // Opened once: everything below reads this file, even if the process execs meanwhile.
    let exe = std::fs::File::open(&link)
        .map(|file| Arc::new(ExeFile(file)))
        .map_err(|error| process.explain(path_error(error)))?;
    let identity = exe
        .0
        .metadata()
        .map(|metadata| ExeIdentity::from_metadata(&metadata))
        .map_err(|error| process.explain(path_error(error)))?;
    let binary = match known(identity) {
        Some(binary) => binary,
        None => Arc::new(
            GoBinary::open(&exe.path(), &path)
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
                source: io::Error::other(error),
            },
        })
    })?;
    let bias = if binary.is_pie {
        let first = binary.first_segment_address().unwrap_or(0);
        procmem::load_bias(pid, &exe.path(), first).map_err(|error| {
            process.explain(TargetError::Io {
                pid,
                source: io::Error::other(error),
            })
        })?
    } else {
        0
    };
    // Outside a container, or on a host without cgroups, the labels stay empty.
    let container = crate::cgroup::read(pid).unwrap_or_default();
    Ok(Prepared {
        process,
        exe,
        path,
        identity,
        binary,
        memory,
        bias,
        container,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[tokio::test]
    async fn an_exec_while_attaching_is_told_from_other_errors() {
        let mut child = Command::new("/bin/sh")
            .args(["-c", "read line; exec sleep 60"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("start sh");
        let pid = child.id();
        let process = ProcessHandle::open(pid).expect("open the child");
        assert!(
            matches!(
                process.explain(TargetError::NoSuchProcess { pid }),
                TargetError::NoExecutable { .. }
            ),
            "not exec'd yet: the error stays"
        );
        let before = ExeIdentity::of_process(pid).expect("the child's executable");
        let mut stdin = child.stdin.take().expect("piped stdin");
        io::Write::write_all(&mut stdin, b"\n").expect("tell sh to exec");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ExeIdentity::of_process(pid).is_ok_and(|now| now == before) {
            assert!(
                std::time::Instant::now() < deadline,
                "sh did not exec sleep"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let explained = process.explain(TargetError::NoSuchProcess { pid });
        let _ = child.kill();
        let _ = child.wait();
        match explained {
            TargetError::ExecdDuringAttach { pid: said, exe } => {
                assert_eq!(said, pid);
                assert!(exe.ends_with("/sleep"), "{exe}");
            }
            other => panic!("an exec explained as {other}"),
        }
    }
}
