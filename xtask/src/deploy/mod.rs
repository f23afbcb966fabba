//! `cargo xtask deploy-check`: offline checks of the deployment assets under deploy/.
//!
//! Each file is read by the tool that will read it for real, where that tool runs offline:
//! `systemd-analyze verify` and `security` for the unit, `kubernetes-validate` (the
//! Kubernetes JSON schemas) for the manifests, a JSON schema written from the CRD for the
//! PodMonitor, `promtool` for the Prometheus configuration, the alerting rules and their unit
//! tests, and `promtool` again for every PromQL expression of the Grafana dashboard, which is
//! both parsed and evaluated over synthetic series (an expression that returns nothing fails).
//! On top of that, the facts the files must agree on are checked across them: the port, the
//! capabilities, the metric names (against ctxleak-daemon/src/metrics.rs); the config files
//! are read by the daemon's own parser.
//!
//! A failure is one line naming the file and the problem; when the tool had more to say, its
//! whole output is printed first. Tools are installed when missing: promtool is extracted
//! from Debian's prometheus package without installing it (installing it would start a
//! Prometheus server), systemd-analyze comes from the systemd package, kubernetes-validate
//! goes into a venv under target/tools/.
//!
//! One file per target: systemd.rs (the unit), config.rs (ctxleak.toml and the ConfigMap's
//! copy), kubernetes.rs (the manifests and the PodMonitor), prometheus.rs (the scrape config,
//! the alerts and their tests, the metric names), grafana.rs (the dashboard), image.rs (the
//! Containerfile); this file holds what they share: the tools, and running and reading them.

mod config;
mod grafana;
mod image;
mod kubernetes;
mod prometheus;
mod systemd;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub use self::prometheus::ensure_prometheus;
use crate::workspace::Workspace;
use crate::{debian, process};

/// Where the unit, the image and the docs install the binary.
const BINARY: &str = "/usr/local/bin/ctxleak";
const PORT: u64 = 9789;
const LISTEN_FLAG: &str = "--web.listen-address";
const LISTEN_ALL: &str = ":9789";

/// Reads YAML (every document) and prints it as JSON, so the checks below are Rust. (TOML is
/// read by the daemon's own parser: config.rs.)
const PY_LOAD: &str = r#"
import json, sys, yaml
data = open(sys.argv[1], 'rb').read()
docs = [d for d in yaml.safe_load_all(data) if d is not None]
json.dump(docs, sys.stdout)
"#;

/// Check the deployment assets under deploy/ offline: systemd unit, Kubernetes manifests,
/// Prometheus config, alerts and their tests, Grafana dashboard, Containerfile.
#[derive(clap::Args)]
pub struct Options {}

pub fn run(ws: &Workspace, _: &Options) -> Result<()> {
    let tools = Tools::ensure(ws)?;
    let scratch = ws.deploy_scratch();
    match fs::remove_dir_all(&scratch) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => bail!("cannot remove {}: {err}", scratch.display()),
    }
    fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let mut checker = Checker {
        ws,
        scratch,
        tools,
        passed: 0,
    };
    let unit_caps = checker.systemd()?;
    checker.config_file()?;
    checker.kubernetes(&unit_caps)?;
    checker.pod_monitor()?;
    checker.prometheus()?;
    checker.dashboard()?;
    checker.metric_names()?;
    checker.containerfile()?;
    println!("deploy-check: {} checks passed", checker.passed);
    Ok(())
}

struct Tools {
    systemd_analyze: PathBuf,
    promtool: PathBuf,
    python: PathBuf,
    kubernetes_validate: PathBuf,
}

impl Tools {
    fn ensure(ws: &Workspace) -> Result<Self> {
        let venv = ws.kubernetes_validate_venv();
        Ok(Self {
            systemd_analyze: systemd::ensure_systemd_analyze()?,
            promtool: prometheus::ensure_promtool(ws)?,
            python: kubernetes::ensure_venv(&venv)?,
            kubernetes_validate: venv.join("bin/kubernetes-validate"),
        })
    }
}

fn apt_install(package: &str) -> Result<()> {
    debian::install(&[package], "for deploy-check")
}

struct Checker<'ws> {
    ws: &'ws Workspace,
    scratch: PathBuf,
    tools: Tools,
    passed: usize,
}

/// A failed tool's whole output, above the one-line error.
fn dump(text: &str) {
    eprintln!("--- tool output:\n{}\n---", text.trim_end());
}

/// The lines of a tool's output worth a one-line error: the first that names a problem.
fn gist(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let keywords = [
        "fail",
        "error",
        "warn",
        "unknown",
        "invalid",
        "not ",
        "unexpected",
        "ignoring",
    ];
    for (i, line) in lines.iter().enumerate() {
        let lower = line.to_lowercase();
        if keywords.iter().any(|k| lower.contains(k)) {
            // promtool's test failures say "FAILED:" and then what failed.
            if lower.trim_end_matches(':') == "failed"
                && let Some(next) = lines.get(i + 1)
            {
                return format!("{line} {next}");
            }
            return (*line).to_string();
        }
    }
    lines
        .last()
        .map_or_else(|| "no output".to_string(), |l| (*l).to_string())
}

impl Checker<'_> {
    fn path(&self, rel: &str) -> PathBuf {
        self.ws.path(rel)
    }

    fn read(&self, rel: &str) -> Result<String> {
        fs::read_to_string(self.path(rel)).with_context(|| format!("{rel}: cannot read"))
    }

    fn ok(&mut self, what: &str) {
        self.passed += 1;
        println!("ok: {what}");
    }

    /// Runs a checking tool. It fails when the tool exits non-zero or, with `silent`, when it
    /// prints anything (systemd-analyze verify only warns, exit 0, about unknown keys and
    /// values it ignores). The tool's output is printed whole, the error is one line.
    fn tool(&self, file: &str, what: &str, cmd: &mut Command, silent: bool) -> Result<String> {
        let (passed, text) = self.capture(file, cmd, silent)?;
        if !passed {
            dump(&text);
            bail!("{file}: {what}: {}", gist(&text));
        }
        Ok(text)
    }

    /// Runs a tool; returns whether it passed (see `tool`) and its output.
    fn capture(&self, file: &str, cmd: &mut Command, silent: bool) -> Result<(bool, String)> {
        let out = cmd
            .output()
            .with_context(|| format!("{file}: cannot start `{}`", process::show(cmd)))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let passed = out.status.success() && (!silent || text.trim().is_empty());
        Ok((passed, text))
    }

    /// Every document of a YAML file, or the table of a TOML file, as JSON.
    fn load(&self, rel: &str) -> Result<Vec<Value>> {
        self.load_path(&self.path(rel), rel)
    }

    fn load_path(&self, path: &Path, name: &str) -> Result<Vec<Value>> {
        let json = process::output(
            Command::new(&self.tools.python)
                .args(["-c", PY_LOAD])
                .arg(path),
        )
        .map_err(|err| anyhow::anyhow!("{name}: cannot parse: {err:#}"))?;
        serde_json::from_str(&json).with_context(|| format!("{name}: cannot read its JSON form"))
    }
}
