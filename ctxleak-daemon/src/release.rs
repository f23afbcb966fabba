//! Removing the probes when ctxleak stops, without making the stop wait for it.
//!
//! Removing a uprobe takes several RCU grace periods (synchronize_rcu, rcu_tasks_trace,
//! srcu), under a kernel-wide mutex (`event_mutex`): about 0.1 s per probe on an idle host,
//! one probe after another whatever the number of threads. A process's exit does not skip
//! that: it closes its descriptors one by one, each the same wait, and the process is gone
//! only after (measured, README "What a stop costs"). So ctxleak hands its eBPF links to a
//! helper, itself run as `ctxleak release-probes --parent PID` with the links inherited: once
//! ctxleak is gone (its own closes only drop references), the helper exits and the kernel
//! removes the probes in the helper's exit, in the background.

use std::io;
use std::os::fd::AsRawFd as _;
use std::process::{Command, Stdio};

/// The hidden subcommand the helper runs.
pub const HELPER_COMMAND: &str = "release-probes";

/// Starts the helper with every eBPF link of this process inherited, so that this process's
/// own closes of them are not the last and return at once. Nothing is changed on error.
pub fn hand_over() -> io::Result<()> {
    let links: Vec<std::fs::File> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(Result::ok)
        .filter(|entry| {
            std::fs::read_link(entry.path())
                .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf_link")
        })
        // Opening /proc/self/fd/N of an anonymous inode is refused; a duplicate is enough:
        // it refers to the same link.
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|fd| {
            // SAFETY: F_DUPFD_CLOEXEC on a descriptor number this process listed just now; it
            // returns a new descriptor, or -1 if that one was closed meanwhile.
            let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            // SAFETY: a fresh descriptor, owned by nothing else.
            (copy >= 0)
                .then(|| unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(copy) })
        })
        .collect();
    if links.is_empty() {
        return Ok(());
    }
    let mut command = Command::new("/proc/self/exe");
    command
        .args([HELPER_COMMAND, "--parent", &std::process::id().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let fds: Vec<i32> = links.iter().map(std::fs::File::as_raw_fd).collect();
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl, which
    // is async-signal-safe, on descriptors the child inherited.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    // Not waited for: it ends after this process, whose init (or subreaper) reaps it.
    command.spawn()?;
    Ok(())
}

/// The helper: returns once `parent` is gone, its descriptors closed. Its caller then exits,
/// and the links it inherited go with it.
pub async fn hold_until_gone(parent: u32) {
    let Ok(handle) = crate::target::ProcessHandle::open(parent) else {
        return; // Gone already.
    };
    // Reparented: the parent is gone, and the PID may already name another process.
    if std::os::unix::process::parent_id() != parent {
        return;
    }
    handle.exited().await;
}
