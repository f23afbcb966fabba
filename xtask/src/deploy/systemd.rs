//! deploy/systemd/ctxleak.service: `systemd-analyze verify` and `security` (offline, in a
//! scratch root), its command line, and the capabilities the DaemonSet must match.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{BINARY, Checker, LISTEN_ALL, LISTEN_FLAG, apt_install, dump};
use crate::process;
use crate::workspace::Workspace;

/// `systemd-analyze security` exposure, in tenths, above which the unit fails (2.5 today, on
/// a scale where 10 is an unprotected service): a hardening option removed by accident shows.
const EXPOSURE_THRESHOLD: &str = "30";

pub(super) fn ensure_systemd_analyze() -> Result<PathBuf> {
    // The unit files of systemd itself are needed too: the unit is verified in a scratch
    // root that borrows them (see `systemd`).
    if which::which("systemd-analyze").is_err() || !Path::new("/usr/lib/systemd/system").is_dir() {
        apt_install("systemd")?;
    }
    which::which("systemd-analyze")
        .context("systemd-analyze is still missing after installing systemd")
}

impl Checker<'_> {
    /// The unit, verified unchanged inside a scratch root that holds an executable at
    /// /usr/local/bin/ctxleak (verify refuses an ExecStart whose binary is missing, and the
    /// real one is not installed here) and systemd's own units (for the targets it names).
    /// Returns its capabilities, which the DaemonSet must match.
    pub(super) fn systemd(&mut self) -> Result<BTreeSet<String>> {
        let rel = Workspace::SYSTEMD_UNIT;
        let unit = self.read(rel)?;
        let service = unit_section(&unit, "Service");
        let get = |key: &str| service.get(key).cloned().unwrap_or_default();
        let exec = get("ExecStart").join(" ");
        let expected = format!(
            "{BINARY} daemon --config /etc/ctxleak/ctxleak.toml {LISTEN_FLAG} {LISTEN_ALL}"
        );
        if exec != expected {
            bail!("{rel}: ExecStart is `{exec}`, expected `{expected}`");
        }
        let caps = |key: &str| -> BTreeSet<String> {
            get(key)
                .iter()
                .flat_map(|v| v.split_whitespace())
                .map(str::to_string)
                .collect()
        };
        let bounding = caps("CapabilityBoundingSet");
        if bounding.is_empty() || bounding != caps("AmbientCapabilities") {
            bail!(
                "{rel}: CapabilityBoundingSet and AmbientCapabilities must list the same capabilities"
            );
        }

        let root = self.scratch.join("systemd-root");
        let units = root.join("etc/systemd/system");
        fs::create_dir_all(&units)?;
        fs::create_dir_all(root.join("usr/lib/systemd"))?;
        process::run(
            Command::new("cp")
                .args(["-r", "/usr/lib/systemd/system"])
                .arg(root.join("usr/lib/systemd/")),
        )?;
        fs::write(units.join("ctxleak.service"), &unit)?;
        let fake = root.join(BINARY.trim_start_matches('/'));
        fs::create_dir_all(fake.parent().context("binary path has no parent")?)?;
        fs::copy("/bin/true", &fake).context("cannot copy /bin/true as the stand-in ctxleak")?;
        let mut verify = Command::new(&self.tools.systemd_analyze);
        verify
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg("ctxleak.service");
        self.tool(rel, "systemd-analyze verify", &mut verify, true)?;
        self.ok("systemd unit: systemd-analyze verify, no warnings");
        let mut security = Command::new(&self.tools.systemd_analyze);
        security
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={EXPOSURE_THRESHOLD}"))
            .arg(format!("--root={}", root.display()))
            .arg("ctxleak.service");
        let (passed, report) = self.capture(rel, &mut security, false)?;
        let level = report
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        let threshold = EXPOSURE_THRESHOLD.parse::<f64>().unwrap_or(0.0) / 10.0;
        if !passed {
            dump(&report);
            bail!(
                "{rel}: systemd-analyze security: exposure {level} is above {threshold:.1}: a hardening setting was lost (the lines marked ✗ above)"
            );
        }
        self.ok(&format!(
            "systemd unit: exposure {level} (at most {threshold:.1})"
        ));
        Ok(bounding)
    }
}

/// The `Key=Value` lines of one section of a unit file (values of repeated keys in order).
fn unit_section(unit: &str, name: &str) -> BTreeMap<String, Vec<String>> {
    let mut section = String::new();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
        } else if section == name
            && let Some((key, value)) = line.split_once('=')
        {
            out.entry(key.trim().to_string())
                .or_default()
                .push(value.trim().to_string());
        }
    }
    out
}
