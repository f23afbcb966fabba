//! Ctrl-C while ctxleak runs is meant for ctxleak, which detaches its probes
//! and exits; xtask must outlive it to stop the demo afterwards. Done with
//! plain signal(2) from the libc crate: no handler is needed, only SIG_IGN.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{Result, bail};

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// Makes this process ignore SIGINT and SIGTERM from now on.
pub fn ignore_interrupts() -> Result<()> {
    for signal in SIGNALS {
        // SAFETY: SIG_IGN installs no handler, so no code runs in signal context.
        if unsafe { libc::signal(signal, libc::SIG_IGN) } == libc::SIG_ERR {
            bail!(
                "could not ignore signal {signal}: {}",
                io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Ignored signals stay ignored across exec, so children would inherit our
/// deafness; restore the default for them between fork and exec.
pub fn default_interrupts_in(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure only calls signal(2), which is async-signal-safe,
    // as code between fork and exec must be.
    unsafe {
        cmd.pre_exec(|| {
            for signal in SIGNALS {
                if libc::signal(signal, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        })
    }
}
