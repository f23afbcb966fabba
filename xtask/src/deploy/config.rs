//! ctxleak.toml (deploy/systemd/ctxleak.toml, and the copy in the Kubernetes ConfigMap), read
//! by the daemon's own parser (`ctxleak_daemon::config::parse_str`), as `ctxleak daemon
//! --config` reads it: its keys are the daemon's flags, its values go through the flags'
//! parsers, so the check cannot drift from the daemon. The whole config check is this file.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use super::Checker;
use crate::workspace::Workspace;

impl Checker<'_> {
    /// ctxleak.toml (and, in `kubernetes`, the copy in the ConfigMap).
    pub(super) fn config_file(&mut self) -> Result<()> {
        let rel = Workspace::CONFIG_FILE;
        let text = fs::read_to_string(self.path(rel)).with_context(|| format!("read {rel}"))?;
        check_config(rel, &text)?;
        self.ok("ctxleak.toml: read by ctxleak daemon's parser");
        Ok(())
    }
}

/// A config file of `ctxleak daemon`, checked by the daemon's own parser (the error names the
/// file and the key).
pub(super) fn check_config(name: &str, text: &str) -> Result<()> {
    ctxleak_daemon::config::parse_str(text, Path::new(name))?;
    Ok(())
}
