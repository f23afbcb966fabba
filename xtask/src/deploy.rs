//! `cargo xtask deploy-check`: offline checks of the deployment assets under deploy/.
//!
//! Each file is read by the tool that will read it for real, where that tool runs offline:
//! `systemd-analyze verify` and `security` for the unit, `kubernetes-validate` (the
//! Kubernetes JSON schemas) for the manifests, a JSON schema written from the CRD for the
//! PodMonitor, `promtool` for the Prometheus configuration, the alerting rules and their unit
//! tests, and `promtool` again for every PromQL expression of the Grafana dashboard, which is
//! both parsed and evaluated over synthetic series (an expression that returns nothing fails).
//! On top of that, the facts the files must agree on are checked across them: the port, the
//! capabilities, the metric names (against ctxleak-daemon/src/metrics.rs). The config files
//! are read by the daemon's own parser (`ctxleak_daemon::config::parse_str`).
//!
//! A failure is one line naming the file and the problem; when the tool had more to say, its
//! whole output is printed first. Tools are installed when missing: promtool is extracted
//! from Debian's prometheus package without installing it (installing it would start a
//! Prometheus server), systemd-analyze comes from the systemd package, kubernetes-validate
//! goes into a venv under target/tools/.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::process;

/// Pinned so that a schema update never changes the verdict on unchanged manifests.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// Validated against the newest schemas kubernetes-validate has and against the oldest
/// Kubernetes the manifests support: `securityContext.appArmorProfile` exists since 1.30.
const OLDEST_KUBERNETES: &str = "1.30";
/// `systemd-analyze security` exposure, in tenths, above which the unit fails (2.5 today, on
/// a scale where 10 is an unprotected service): a hardening option removed by accident shows.
const EXPOSURE_THRESHOLD: &str = "30";
/// Where the unit, the image and the docs install the binary.
const BINARY: &str = "/usr/local/bin/ctxleak";
const PORT: u64 = 9789;
const LISTEN_FLAG: &str = "--web.listen-address";
const LISTEN_ALL: &str = ":9789";
/// Grafana's interval variables, replaced by `5m` before PromQL is parsed.
const GRAFANA_INTERVALS: &[&str] = &["__rate_interval", "__interval", "__range"];
/// When the dashboard's expressions are evaluated over the synthetic series (an hour long).
const DASHBOARD_EVAL_TIME: &str = "59m";

/// Reads YAML (every document) or TOML and prints it as JSON, so the checks below are Rust.
const PY_LOAD: &str = r#"
import json, sys
path = sys.argv[1]
data = open(path, 'rb').read()
if path.endswith('.toml'):
    import tomllib
    docs = [tomllib.loads(data.decode())]
else:
    import yaml
    docs = [d for d in yaml.safe_load_all(data) if d is not None]
json.dump(docs, sys.stdout)
"#;

/// Validates every YAML document of argv[2] against the JSON schema argv[1]; prints one line
/// per violation, most specific path first.
const PY_SCHEMA: &str = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
bad = []
for doc in yaml.safe_load_all(open(sys.argv[2])):
    if doc is None:
        continue
    for e in sorted(validator.iter_errors(doc), key=lambda e: -len(e.absolute_path)):
        where = '.'.join(str(p) for p in e.absolute_path) or 'document'
        bad.append(where + ': ' + e.message)
print('\n'.join(bad))
sys.exit(1 if bad else 0)
"#;

pub fn check(ws: &Path) -> Result<()> {
    let tools = Tools::ensure(ws)?;
    let scratch = ws.join("target/deploy-check");
    match fs::remove_dir_all(&scratch) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => bail!("cannot remove {}: {err}", scratch.display()),
    }
    fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let mut checker = Checker {
        ws: ws.to_path_buf(),
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
    fn ensure(ws: &Path) -> Result<Self> {
        let tools = ws.join("target/tools");
        Ok(Self {
            systemd_analyze: ensure_systemd_analyze()?,
            promtool: ensure_promtool(ws)?,
            python: ensure_venv(&tools.join("kubernetes-validate"))?,
            kubernetes_validate: tools.join("kubernetes-validate/bin/kubernetes-validate"),
        })
    }
}

/// promtool from PATH when there is one, else Debian's (see `ensure_prometheus`).
fn ensure_promtool(ws: &Path) -> Result<PathBuf> {
    match which::which("promtool") {
        Ok(path) => Ok(path),
        Err(_) => Ok(ensure_prometheus(ws)?.promtool),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn apt_install(package: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "the Debian package {package} is missing: install it (apt-get install {package}) or run as root"
        );
    }
    println!("deploy-check: installing {package} (Debian package)");
    process::run(Command::new("apt-get").args(["update", "-qq"]))?;
    process::run(Command::new("apt-get").args(["install", "-y", "-qq", package]))
        .with_context(|| format!("cannot install {package}: run `apt-get install {package}`"))
}

fn ensure_systemd_analyze() -> Result<PathBuf> {
    // The unit files of systemd itself are needed too: the unit is verified in a scratch
    // root that borrows them (see `systemd`).
    if which::which("systemd-analyze").is_err() || !Path::new("/usr/lib/systemd/system").is_dir() {
        apt_install("systemd")?;
    }
    which::which("systemd-analyze")
        .context("systemd-analyze is still missing after installing systemd")
}

/// The Prometheus server and promtool, as Debian's prometheus package builds them.
pub struct PrometheusTools {
    pub prometheus: PathBuf,
    pub promtool: PathBuf,
}

/// Where `ensure_prometheus` puts them: `usr/bin/{prometheus,promtool}` under this folder.
fn prometheus_dir(ws: &Path) -> PathBuf {
    ws.join("target/tools/prometheus")
}

/// The server and promtool from Debian's prometheus package, extracted into
/// target/tools/prometheus/: `apt-get download` and `dpkg-deb`, with no maintainer scripts
/// run, so nothing is installed system-wide and no Prometheus service is set up or started.
/// deploy-check uses promtool; the tests (`cargo xtask test`) start the server on loopback.
pub fn ensure_prometheus(ws: &Path) -> Result<PrometheusTools> {
    let dir = prometheus_dir(ws);
    let tools = PrometheusTools {
        prometheus: dir.join("usr/bin/prometheus"),
        promtool: dir.join("usr/bin/promtool"),
    };
    let runs = |binary: &Path| process::output(Command::new(binary).arg("--version")).is_ok();
    if runs(&tools.prometheus) && runs(&tools.promtool) {
        return Ok(tools);
    }
    println!(
        "extracting prometheus and promtool from Debian's prometheus package into {}",
        dir.display()
    );
    // Extracted beside the final folder and renamed into place, so an interrupted
    // extraction never leaves a half-written binary where the check above would find it.
    let partial = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let download = || {
        process::output(
            Command::new("apt-get")
                .args(["download", "-qq", "prometheus"])
                .current_dir(&partial),
        )
    };
    if download().is_err() {
        // Most often the package lists were never fetched on this machine.
        if !is_root() {
            bail!(
                "cannot download Debian's prometheus package (for prometheus and promtool): run `apt-get update` as root"
            );
        }
        process::run(Command::new("apt-get").args(["update", "-qq"]))?;
        download().context("cannot download Debian's prometheus package")?;
    }
    let deb = fs::read_dir(&partial)
        .with_context(|| format!("cannot list {}", partial.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .context("apt-get download prometheus left no .deb")?;
    let mut unpack = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start dpkg-deb")?;
    let tar_input = unpack.stdout.take().context("dpkg-deb has no stdout")?;
    let extracted = Command::new("tar")
        .args(["-x", "-C"])
        .arg(&partial)
        .args(["./usr/bin/prometheus", "./usr/bin/promtool"])
        .stdin(tar_input)
        .status()
        .context("cannot start tar")?;
    let unpacked = unpack.wait().context("cannot wait for dpkg-deb")?;
    if !extracted.success() || !unpacked.success() {
        bail!(
            "cannot extract usr/bin/prometheus and usr/bin/promtool from {}",
            deb.display()
        );
    }
    fs::remove_file(&deb).with_context(|| format!("cannot remove {}", deb.display()))?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&partial, &dir)
        .with_context(|| format!("cannot move {} to {}", partial.display(), dir.display()))?;
    for binary in [&tools.prometheus, &tools.promtool] {
        process::output(Command::new(binary).arg("--version"))
            .with_context(|| format!("the extracted {} does not run", binary.display()))?;
    }
    Ok(tools)
}

/// A venv with kubernetes-validate (which brings jsonschema and PyYAML, used directly too).
/// A stamp written last marks a finished install, since a venv cannot be built elsewhere and
/// moved into place.
fn ensure_venv(dir: &Path) -> Result<PathBuf> {
    let python = dir.join("bin/python");
    let stamp = dir.join(".deploy-check-installed");
    if fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == KUBERNETES_VALIDATE) {
        return Ok(python);
    }
    println!(
        "deploy-check: installing {KUBERNETES_VALIDATE} into {}",
        dir.display()
    );
    let _ = fs::remove_dir_all(dir);
    process::output(Command::new("python3").args(["-m", "venv"]).arg(dir))
        .context("cannot create a Python venv: install python3 with venv (Debian: apt-get install python3-venv)")?;
    process::output(Command::new(dir.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        KUBERNETES_VALIDATE,
        "jsonschema",
        "PyYAML",
    ]))
    .context("cannot install kubernetes-validate with pip: check that PyPI is reachable")?;
    process::output(Command::new(&python).args(["-c", "import tomllib"]))
        .context("the venv's Python has no tomllib: Python 3.11 or later is needed")?;
    fs::write(&stamp, KUBERNETES_VALIDATE)?;
    Ok(python)
}

struct Checker {
    ws: PathBuf,
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

impl Checker {
    fn path(&self, rel: &str) -> PathBuf {
        self.ws.join(rel)
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

    /// The unit, verified unchanged inside a scratch root that holds an executable at
    /// /usr/local/bin/ctxleak (verify refuses an ExecStart whose binary is missing, and the
    /// real one is not installed here) and systemd's own units (for the targets it names).
    /// Returns its capabilities, which the DaemonSet must match.
    fn systemd(&mut self) -> Result<BTreeSet<String>> {
        let rel = "deploy/systemd/ctxleak.service";
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

    /// ctxleak.toml (and, in `kubernetes`, the copy in the ConfigMap): read by the daemon's
    /// own parser, as `ctxleak daemon --config` reads it.
    fn config_file(&mut self) -> Result<()> {
        let rel = "deploy/systemd/ctxleak.toml";
        let text = fs::read_to_string(self.path(rel)).with_context(|| format!("read {rel}"))?;
        check_config(rel, &text)?;
        self.ok("ctxleak.toml: read by ctxleak daemon's parser");
        Ok(())
    }

    fn kubernetes(&mut self, unit_caps: &BTreeSet<String>) -> Result<()> {
        let rel = "deploy/kubernetes/ctxleak.yaml";
        let file = self.path(rel);
        let kv = self.tools.kubernetes_validate.clone();
        for version in [None, Some(OLDEST_KUBERNETES)] {
            let mut cmd = Command::new(&kv);
            cmd.args(["--strict", "--quiet"]);
            if let Some(version) = version {
                cmd.args(["-k", version]);
            }
            cmd.arg(&file);
            let what = format!(
                "kubernetes-validate --strict{}",
                version.map(|v| format!(" -k {v}")).unwrap_or_default()
            );
            self.tool(rel, &what, &mut cmd, false)?;
        }
        self.ok(&format!(
            "Kubernetes manifests: schemas of {OLDEST_KUBERNETES} and the newest, strict"
        ));

        let docs = self.load(rel)?;
        let find = |kind: &str| -> Result<&Value> {
            docs.iter()
                .find(|d| d["kind"] == kind)
                .with_context(|| format!("{rel}: no {kind}"))
        };
        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap_or("?");
            let namespace = if kind == "Namespace" {
                &doc["metadata"]["name"]
            } else {
                &doc["metadata"]["namespace"]
            };
            if *namespace != "ctxleak" {
                bail!(
                    "{rel}: {kind} {} is not in the namespace ctxleak",
                    doc["metadata"]["name"]
                );
            }
        }
        let ds = find("DaemonSet")?;
        let pod = &ds["spec"]["template"]["spec"];
        let containers = pod["containers"].as_array().context("no containers")?;
        let [container] = containers.as_slice() else {
            bail!("{rel}: the DaemonSet must have exactly one container");
        };
        let sc = &container["securityContext"];
        let must = |ok: bool, what: &str| -> Result<()> {
            if ok {
                Ok(())
            } else {
                bail!("{rel}: DaemonSet: {what}")
            }
        };
        must(
            pod["hostPID"] == true,
            "hostPID must be true (ctxleak watches the node's processes)",
        )?;
        must(
            pod["hostNetwork"] != true,
            "hostNetwork must stay off (metrics are served on the pod IP)",
        )?;
        must(
            sc["privileged"] != true,
            "privileged must not be set: add the capabilities instead",
        )?;
        must(
            sc["allowPrivilegeEscalation"] == false,
            "allowPrivilegeEscalation must be false",
        )?;
        must(
            sc["readOnlyRootFilesystem"] == true,
            "readOnlyRootFilesystem must be true",
        )?;
        must(
            sc["capabilities"]["drop"] == json!(["ALL"]),
            "capabilities.drop must be [ALL]",
        )?;
        let seccomp = if sc["seccompProfile"].is_null() {
            &pod["securityContext"]["seccompProfile"]
        } else {
            &sc["seccompProfile"]
        };
        must(
            !seccomp.is_null(),
            "a seccompProfile must be chosen explicitly",
        )?;
        let added: BTreeSet<String> = sc["capabilities"]["add"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|c| format!("CAP_{c}"))
                    .collect()
            })
            .unwrap_or_default();
        if &added != unit_caps {
            bail!(
                "{rel}: DaemonSet adds capabilities {added:?} but deploy/systemd/ctxleak.service grants {unit_caps:?}: they must agree"
            );
        }
        let args: Vec<&str> = container["args"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        must(
            args.windows(2).any(|w| w == [LISTEN_FLAG, LISTEN_ALL]),
            &format!("args must contain {LISTEN_FLAG} {LISTEN_ALL}"),
        )?;
        let port = container["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["name"] == "metrics"))
            .with_context(|| format!("{rel}: DaemonSet: no container port named metrics"))?;
        must(
            port["containerPort"] == PORT,
            &format!("the metrics port must be {PORT}"),
        )?;
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let get = &container[probe]["httpGet"];
            must(
                get["port"] == "metrics" && get["path"] == "/metrics",
                &format!("{probe} must GET /metrics on the port named metrics"),
            )?;
        }
        let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
        must(
            annotations["prometheus.io/port"].as_str() == Some(PORT.to_string().as_str()),
            "annotation prometheus.io/port must be the metrics port",
        )?;
        must(
            annotations["prometheus.io/path"] == "/metrics",
            "annotation prometheus.io/path must be /metrics",
        )?;
        let service = find("Service")?;
        if service["spec"]["ports"][0]["targetPort"] != "metrics"
            || service["spec"]["selector"] != ds["spec"]["selector"]["matchLabels"]
        {
            bail!(
                "{rel}: Service must select the DaemonSet's pods and target the port named metrics"
            );
        }
        // The ConfigMap's ctxleak.toml is checked like the file.
        let toml = find("ConfigMap")?["data"]["ctxleak.toml"]
            .as_str()
            .with_context(|| format!("{rel}: ConfigMap has no ctxleak.toml"))?;
        check_config(&format!("{rel} (ConfigMap ctxleak.toml)"), toml)?;
        self.ok(
            "Kubernetes manifests: hostPID, capabilities as in the unit, port 9789, probes, config",
        );
        Ok(())
    }

    /// The PodMonitor is a custom resource, outside the Kubernetes schemas: it is checked
    /// against podmonitor.schema.json (written from the operator's CRD) and against the
    /// DaemonSet it must select.
    fn pod_monitor(&mut self) -> Result<()> {
        let rel = "deploy/kubernetes/prometheus-operator/podmonitor.yaml";
        let schema = self.path("deploy/kubernetes/prometheus-operator/podmonitor.schema.json");
        let mut cmd = Command::new(&self.tools.python);
        cmd.args(["-c", PY_SCHEMA]).arg(&schema).arg(self.path(rel));
        self.tool(
            rel,
            "does not match podmonitor.schema.json",
            &mut cmd,
            false,
        )?;
        let monitor = self.load(rel)?.into_iter().next().unwrap_or(Value::Null);
        let daemonset = self
            .load("deploy/kubernetes/ctxleak.yaml")?
            .into_iter()
            .find(|d| d["kind"] == "DaemonSet")
            .unwrap_or(Value::Null);
        let pod_labels = &daemonset["spec"]["template"]["metadata"]["labels"];
        let selected = monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .is_some_and(|m| m.iter().all(|(k, v)| &pod_labels[k] == v));
        if !selected {
            bail!("{rel}: spec.selector does not match the DaemonSet's pod labels");
        }
        if monitor["spec"]["podMetricsEndpoints"][0]["port"] != "metrics" {
            bail!("{rel}: podMetricsEndpoints[0].port must be the container port named metrics");
        }
        let job_label = monitor["spec"]["jobLabel"].as_str().unwrap_or("");
        if pod_labels[job_label] != "ctxleak" {
            bail!(
                "{rel}: jobLabel must name a pod label whose value is ctxleak (the alerts and dashboard select job=\"ctxleak\")"
            );
        }
        self.ok("PodMonitor: schema, selects the DaemonSet, job=\"ctxleak\"");
        Ok(())
    }

    fn prometheus(&mut self) -> Result<()> {
        let promtool = self.tools.promtool.clone();
        let dir = self.path("deploy/prometheus");
        let rel = "deploy/prometheus/prometheus.yml";
        // check config also checks the rule files it names (alerts.yml).
        self.tool(
            rel,
            "promtool check config",
            Command::new(&promtool)
                .args(["check", "config", "prometheus.yml"])
                .current_dir(&dir),
            false,
        )?;
        let config = self.load(rel)?.into_iter().next().unwrap_or(Value::Null);
        let targets = &config["scrape_configs"][0]["static_configs"][0]["targets"];
        if config["scrape_configs"][0]["job_name"] != "ctxleak"
            || !targets[0]
                .as_str()
                .is_some_and(|t| t.ends_with(&format!(":{PORT}")))
        {
            bail!(
                "{rel}: the first scrape config must be job ctxleak with a target on port {PORT}"
            );
        }
        self.ok("prometheus.yml: promtool check config, job ctxleak");
        // The commented Kubernetes example, uncommented, must be a valid config too.
        let text = self.read(rel)?;
        let (begin, end) = (
            "# BEGIN kubernetes_sd example",
            "# END kubernetes_sd example",
        );
        let block = text
            .split_once(begin)
            .and_then(|(_, rest)| rest.split_once(end))
            .map(|(block, _)| block)
            .with_context(|| format!("{rel}: no `{begin}` ... `{end}` block"))?;
        let mut uncommented = String::from("scrape_configs:\n");
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            let Some(code) = line
                .trim_start()
                .strip_prefix("# ")
                .or_else(|| line.trim_start().strip_prefix('#'))
            else {
                bail!("{rel}: kubernetes_sd example line is not commented: {line}");
            };
            uncommented.push_str("  ");
            uncommented.push_str(code);
            uncommented.push('\n');
        }
        let example = self.scratch.join("kubernetes-sd-example.yml");
        fs::write(&example, uncommented)?;
        let name = format!("{rel} (kubernetes_sd example)");
        let (passed, text) = self.capture(
            &name,
            Command::new(&promtool)
                .args(["check", "config"])
                .arg(&example),
            false,
        )?;
        if passed {
            self.ok("prometheus.yml: the commented kubernetes_sd example, uncommented");
        } else if text.contains("field kubernetes_sd_configs not found") {
            // Debian builds Prometheus without Kubernetes discovery (its client libraries are
            // not packaged), so its promtool rejects the block itself. Check the rest with
            // promtool (the relabeling, which is where mistakes hide) and the discovery
            // block by its documented shape.
            println!(
                "deploy-check: this promtool lacks Kubernetes discovery (Debian build): checking the example's kubernetes_sd_configs by shape, the rest with promtool"
            );
            let mut config = self
                .load_path(&example, &name)?
                .into_iter()
                .next()
                .unwrap_or(Value::Null);
            let jobs = config["scrape_configs"]
                .as_array_mut()
                .with_context(|| format!("{name}: no scrape_configs"))?;
            for job in jobs {
                let job = job
                    .as_object_mut()
                    .with_context(|| format!("{name}: a scrape config is not a map"))?;
                let sd = job.remove("kubernetes_sd_configs").unwrap_or(Value::Null);
                check_kubernetes_sd(&name, &sd)?;
                job.insert(
                    "static_configs".into(),
                    json!([{"targets": ["10.0.0.1:9789"]}]),
                );
            }
            let stand_in = self.scratch.join("kubernetes-sd-example-static.json");
            fs::write(&stand_in, serde_json::to_string_pretty(&config)?)?;
            self.tool(
                &name,
                "promtool check config (discovery replaced by a static target)",
                Command::new(&promtool)
                    .args(["check", "config"])
                    .arg(&stand_in),
                false,
            )?;
            self.ok("prometheus.yml: the commented kubernetes_sd example (relabeling by promtool, discovery by shape)");
        } else {
            dump(&text);
            bail!("{name}: promtool check config: {}", gist(&text));
        }

        let rules = "deploy/prometheus/alerts.yml";
        self.tool(
            rules,
            "promtool check rules",
            Command::new(&promtool)
                .args(["check", "rules", "alerts.yml"])
                .current_dir(&dir),
            false,
        )?;
        self.ok("alerts.yml: promtool check rules");
        let tests = "deploy/prometheus/alerts_test.yml";
        self.tool(
            tests,
            "promtool test rules",
            Command::new(&promtool)
                .args(["test", "rules", "alerts_test.yml"])
                .current_dir(&dir),
            false,
        )?;
        self.ok("alerts.yml: promtool test rules alerts_test.yml");
        Ok(())
    }

    /// The dashboard's structure, then every PromQL expression (panels and variables, with
    /// Grafana's variables replaced) parsed as recording rules and evaluated over
    /// dashboard-test-series.json: each must return at least one series.
    fn dashboard(&mut self) -> Result<()> {
        let rel = "deploy/grafana/ctxleak-dashboard.json";
        let dash: Value =
            serde_json::from_str(&self.read(rel)?).with_context(|| format!("{rel}: not JSON"))?;
        for key in ["title", "uid"] {
            if dash[key].as_str().is_none_or(str::is_empty) {
                bail!("{rel}: no {key}");
            }
        }
        let vars = dash["templating"]["list"]
            .as_array()
            .with_context(|| format!("{rel}: no templating.list"))?;
        let defined: BTreeSet<String> = vars
            .iter()
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect();
        if !vars.iter().any(|v| {
            v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"
        }) {
            bail!("{rel}: needs a Prometheus data source variable named datasource");
        }
        // (name for messages, PromQL)
        let mut exprs: Vec<(String, String)> = Vec::new();
        for var in vars.iter().filter(|v| v["type"] == "query") {
            let name = var["name"].as_str().unwrap_or("?");
            if var["datasource"]["uid"] != "${datasource}" {
                bail!(
                    "{rel}: variable {name}: datasource must be the ${{datasource}} variable, so the import asks for one"
                );
            }
            let query = var["query"]["query"]
                .as_str()
                .or(var["query"].as_str())
                .unwrap_or("");
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .map(|(sel, _)| sel.trim())
                .with_context(|| format!("{rel}: variable {name}: expected label_values(SELECTOR, LABEL), got {query:?}"))?;
            let promql = grafana_to_promql(selector, &defined)
                .map_err(|e| anyhow::anyhow!("{rel}: variable {name}: {e}"))?;
            exprs.push((format!("variable {name}"), promql));
        }
        let mut ids = BTreeSet::new();
        let mut stack: Vec<&Value> = dash["panels"]
            .as_array()
            .with_context(|| format!("{rel}: no panels"))?
            .iter()
            .collect();
        while let Some(panel) = stack.pop() {
            let id = panel["id"]
                .as_u64()
                .with_context(|| format!("{rel}: a panel has no numeric id"))?;
            let title = panel["title"].as_str().unwrap_or("");
            let what = format!("panel {id} {title:?}");
            if !ids.insert(id) {
                bail!("{rel}: {what}: duplicate id");
            }
            if title.is_empty() {
                bail!("{rel}: panel {id} has no title");
            }
            let grid = &panel["gridPos"];
            let (Some(x), Some(w), Some(_), Some(_)) = (
                grid["x"].as_u64(),
                grid["w"].as_u64(),
                grid["y"].as_u64(),
                grid["h"].as_u64(),
            ) else {
                bail!("{rel}: {what}: gridPos needs x, y, w and h");
            };
            if x + w > 24 {
                bail!("{rel}: {what}: wider than the 24-column grid");
            }
            if panel["type"] == "row" {
                stack.extend(panel["panels"].as_array().into_iter().flatten());
                continue;
            }
            if panel["datasource"]["uid"] != "${datasource}" {
                bail!(
                    "{rel}: {what}: datasource must be the ${{datasource}} variable, so the import asks for one"
                );
            }
            let targets = panel["targets"]
                .as_array()
                .filter(|t| !t.is_empty())
                .with_context(|| format!("{rel}: {what}: no queries"))?;
            let mut refs = BTreeSet::new();
            for target in targets {
                let ref_id = target["refId"].as_str().unwrap_or("");
                if ref_id.is_empty() || !refs.insert(ref_id) {
                    bail!("{rel}: {what}: missing or duplicate refId {ref_id:?}");
                }
                let expr = target["expr"]
                    .as_str()
                    .filter(|e| !e.trim().is_empty())
                    .with_context(|| format!("{rel}: {what} query {ref_id}: no expr"))?;
                let promql = grafana_to_promql(expr, &defined)
                    .map_err(|e| anyhow::anyhow!("{rel}: {what} query {ref_id}: {e}"))?;
                exprs.push((format!("{what} query {ref_id}"), promql));
            }
        }
        self.ok(&format!("dashboard: structure, {} panels", ids.len()));

        // Parse: each expression as a recording rule.
        let record = |i: usize| format!("ctxleak_dashboard:expr_{i}");
        let rules = json!({"groups": [{"name": "dashboard", "rules": exprs.iter().enumerate()
            .map(|(i, (_, e))| json!({"record": record(i), "expr": e})).collect::<Vec<_>>()}]});
        let rules_file = self.scratch.join("dashboard-rules.json");
        fs::write(&rules_file, serde_json::to_string_pretty(&rules)?)?;
        // Name the panel: promtool names the rule.
        self.promtool_on_dashboard(
            rel,
            ["check", "rules"],
            &rules_file,
            &exprs,
            |i, _| format!("\"{}\"", record(i)),
            "PromQL does not parse",
        )?;
        self.ok(&format!(
            "dashboard: {} PromQL expressions parse (promtool check rules)",
            exprs.len()
        ));

        // Evaluate: each must return something over the synthetic series.
        let series: Value =
            serde_json::from_str(&self.read("deploy/grafana/dashboard-test-series.json")?)
                .context("deploy/grafana/dashboard-test-series.json: not JSON")?;
        let tests = json!({
            "rule_files": [rules_file.display().to_string()],
            "evaluation_interval": "1m",
            "tests": [{
                "interval": "1m",
                "input_series": series["input_series"],
                "promql_expr_test": exprs.iter().map(|(_, e)| json!({
                    "expr": returns_data(e),
                    "eval_time": DASHBOARD_EVAL_TIME,
                    "exp_samples": [{"labels": "{}", "value": 1}],
                })).collect::<Vec<_>>(),
            }],
        });
        let tests_file = self.scratch.join("dashboard-tests.json");
        fs::write(&tests_file, serde_json::to_string_pretty(&tests)?)?;
        // promtool quotes each failing expression Go-style (%q).
        self.promtool_on_dashboard(
            rel,
            ["test", "rules"],
            &tests_file,
            &exprs,
            |_, expr| go_quote(&returns_data(expr)),
            "returns nothing over deploy/grafana/dashboard-test-series.json (wrong metric, label or join?)",
        )?;
        self.ok("dashboard: every expression returns data over the synthetic series");
        Ok(())
    }

    /// `promtool COMMAND FILE` on a file made from the dashboard's expressions (`exprs`: what
    /// each is, and its PromQL); when it fails, the one-line error names the first expression
    /// whose `needle` (by index and PromQL) its output contains, with `problem`.
    fn promtool_on_dashboard(
        &self,
        rel: &str,
        command: [&str; 2],
        file: &Path,
        exprs: &[(String, String)],
        needle: impl Fn(usize, &str) -> String,
        problem: &str,
    ) -> Result<()> {
        let (passed, text) = self.capture(
            rel,
            Command::new(&self.tools.promtool).args(command).arg(file),
            false,
        )?;
        if passed {
            return Ok(());
        }
        dump(&text);
        let culprit = exprs
            .iter()
            .enumerate()
            .find(|(i, (_, expr))| text.contains(&needle(*i, expr)));
        match culprit {
            Some((_, (what, expr))) => bail!("{rel}: {what}: {problem}: {expr}"),
            None => bail!("{rel}: promtool {}: {}", command.join(" "), gist(&text)),
        }
    }

    /// Every ctxleak_* metric the alerts, their tests and the dashboard use must be one that
    /// ctxleak-daemon/src/metrics.rs registers (counters get `_total`).
    fn metric_names(&mut self) -> Result<()> {
        let source_rel = "ctxleak-daemon/src/metrics.rs";
        let source = self.read(source_rel)?;
        let mut known = BTreeSet::new();
        for (_, rest) in source
            .match_indices(".register(")
            .map(|(i, _)| source.split_at(i + ".register(".len()))
        {
            if let Some(name) = rest
                .trim_start()
                .strip_prefix('"')
                .and_then(|r| r.split_once('"'))
                .map(|(n, _)| n)
            {
                known.insert(format!("ctxleak_{name}"));
                known.insert(format!("ctxleak_{name}_total"));
            }
        }
        if known.is_empty() {
            bail!(
                "{source_rel}: found no registry.register(\"name\", ...) calls: update deploy.rs's reading of it"
            );
        }
        let files = [
            "deploy/prometheus/alerts.yml",
            "deploy/prometheus/alerts_test.yml",
            "deploy/grafana/ctxleak-dashboard.json",
            "deploy/grafana/dashboard-test-series.json",
        ];
        let mut count = 0;
        for rel in files {
            let text = self.read(rel)?;
            for (start, _) in text.match_indices("ctxleak_") {
                let name: String = text[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                count += 1;
                if !known.contains(&name) {
                    bail!("{rel}: uses the metric {name}, which {source_rel} does not register");
                }
            }
        }
        self.ok(&format!(
            "metric names: {count} uses, all registered in {source_rel}"
        ));
        Ok(())
    }

    /// No image can be built here (no container engine, no registry), so the Containerfile
    /// is checked for what would break the build or the deployment: instructions, stages and
    /// their references, the runtime base, the binary's path and the command line.
    fn containerfile(&mut self) -> Result<()> {
        let rel = "deploy/Containerfile";
        let text = self.read(rel)?;
        let instructions = containerfile_instructions(&text);
        let known = [
            "FROM",
            "RUN",
            "CMD",
            "LABEL",
            "EXPOSE",
            "ENV",
            "ADD",
            "COPY",
            "ENTRYPOINT",
            "VOLUME",
            "USER",
            "WORKDIR",
            "ARG",
            "ONBUILD",
            "STOPSIGNAL",
            "HEALTHCHECK",
            "SHELL",
        ];
        // (image, name) of each stage, and the instructions of the last one.
        let mut stages: Vec<(String, Option<String>)> = Vec::new();
        let mut last: Vec<(String, String)> = Vec::new();
        for (keyword, args) in &instructions {
            if !known.contains(&keyword.as_str()) {
                bail!("{rel}: unknown instruction {keyword}");
            }
            if stages.is_empty() && keyword != "FROM" && keyword != "ARG" {
                bail!("{rel}: {keyword} before the first FROM");
            }
            if keyword == "FROM" {
                let words: Vec<&str> = args.split_whitespace().collect();
                let name = match words.as_slice() {
                    [_] => None,
                    [_, kw, name] if kw.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    _ => bail!("{rel}: cannot read `FROM {args}`"),
                };
                stages.push((words[0].to_string(), name));
                last.clear();
                continue;
            }
            if (keyword == "COPY" || keyword == "ADD")
                && let Some(from) = args
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("--from="))
            {
                let earlier = &stages[..stages.len() - 1];
                if !earlier
                    .iter()
                    .any(|(_, name)| name.as_deref() == Some(from))
                {
                    bail!("{rel}: COPY --from={from} names no earlier stage");
                }
            }
            last.push((keyword.clone(), args.clone()));
        }
        let [(build_image, Some(build_name)), .., (runtime_image, _)] = stages.as_slice() else {
            bail!("{rel}: expected a named build stage and a runtime stage");
        };
        if !build_image.ends_with("-bookworm") {
            bail!(
                "{rel}: the build stage ({build_image}) must be Debian bookworm like the runtime, for the same glibc"
            );
        }
        if !runtime_image.ends_with("debian:bookworm-slim") {
            bail!("{rel}: the runtime stage must be debian:bookworm-slim, not {runtime_image}");
        }
        let runs: String = instructions
            .iter()
            .filter(|(k, _)| k == "RUN")
            .map(|(_, a)| a.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        for needed in ["cargo xtask setup", "cargo build --release"] {
            if !runs.contains(needed) {
                bail!(
                    "{rel}: the build stage must run `{needed}` (the eBPF object is embedded by that build)"
                );
            }
        }
        let copies_binary = last.iter().any(|(k, a)| {
            k == "COPY"
                && a.contains(&format!("--from={build_name}"))
                && a.trim_end().ends_with(BINARY)
        });
        if !copies_binary {
            bail!("{rel}: the runtime stage must COPY --from={build_name} the binary to {BINARY}");
        }
        let json_form = |keyword: &str| -> Result<Vec<String>> {
            let (_, args) = last
                .iter()
                .rev()
                .find(|(k, _)| k == keyword)
                .with_context(|| format!("{rel}: the runtime stage has no {keyword}"))?;
            serde_json::from_str(args).with_context(|| {
                format!("{rel}: {keyword} must be in JSON form (exec, no shell): {args}")
            })
        };
        if json_form("ENTRYPOINT")? != [BINARY] {
            bail!("{rel}: ENTRYPOINT must be [\"{BINARY}\"]");
        }
        let cmd = json_form("CMD")?;
        if cmd.first().map(String::as_str) != Some("daemon")
            || !cmd.windows(2).any(|w| w == [LISTEN_FLAG, LISTEN_ALL])
        {
            bail!("{rel}: CMD must run `daemon` with {LISTEN_FLAG} {LISTEN_ALL}");
        }
        let ignore_rel = "deploy/Containerfile.dockerignore";
        let ignore = self.read(ignore_rel)?;
        if !ignore.lines().any(|l| l.trim() == "target") {
            bail!(
                "{ignore_rel}: must exclude target (gigabytes of build output) from the build context"
            );
        }
        self.ok(
            "Containerfile: stages, runtime debian:bookworm-slim, binary, entrypoint, ignore file",
        );
        Ok(())
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

/// The shape of a `kubernetes_sd_configs` list, for promtools built without that discovery.
fn check_kubernetes_sd(name: &str, sd: &Value) -> Result<()> {
    let roles = [
        "node",
        "service",
        "pod",
        "endpoints",
        "endpointslice",
        "ingress",
    ];
    let list = sd
        .as_array()
        .filter(|l| !l.is_empty())
        .with_context(|| format!("{name}: kubernetes_sd_configs must be a non-empty list"))?;
    for entry in list {
        let map = entry
            .as_object()
            .with_context(|| format!("{name}: a kubernetes_sd_configs entry is not a map"))?;
        for key in map.keys() {
            let known = [
                "role",
                "namespaces",
                "selectors",
                "api_server",
                "kubeconfig_file",
                "attach_metadata",
                "follow_redirects",
                "enable_http2",
                "tls_config",
                "authorization",
                "oauth2",
                "basic_auth",
                "proxy_url",
            ];
            if !known.contains(&key.as_str()) {
                bail!("{name}: kubernetes_sd_configs: unknown field {key}");
            }
        }
        if !map
            .get("role")
            .and_then(Value::as_str)
            .is_some_and(|r| roles.contains(&r))
        {
            bail!(
                "{name}: kubernetes_sd_configs: role must be one of {}",
                roles.join(", ")
            );
        }
        if let Some(namespaces) = map.get("namespaces") {
            let names_ok = namespaces.as_object().is_some_and(|n| {
                n.keys().all(|k| k == "names" || k == "own_namespace")
                    && n.get("names").is_none_or(|names| {
                        names
                            .as_array()
                            .is_some_and(|a| a.iter().all(Value::is_string))
                    })
            });
            if !names_ok {
                bail!("{name}: kubernetes_sd_configs: namespaces must be {{names: [strings]}}");
            }
        }
    }
    Ok(())
}

/// A config file of `ctxleak daemon`, checked by the daemon's own parser: its keys are the
/// daemon's flags, its values go through the flags' parsers (the error names file and key).
fn check_config(name: &str, text: &str) -> Result<()> {
    ctxleak_daemon::config::parse_str(text, Path::new(name))?;
    Ok(())
}

/// A Grafana query as plain PromQL: interval variables become 5m, other variables (used in
/// regex matchers) `.*`. An undefined variable is an error: the panel would show nothing.
fn grafana_to_promql(expr: &str, defined: &BTreeSet<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find(['$', '[']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (name, len) = if let Some(braced) = tail.strip_prefix("${") {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {expr:?}"))?;
            let inner = &braced[..end];
            (
                inner.split(':').next().unwrap_or(inner).to_string(),
                end + 3,
            )
        } else if let Some(old) = tail.strip_prefix("[[") {
            let end = old
                .find("]]")
                .ok_or_else(|| format!("unclosed [[ in {expr:?}"))?;
            (old[..end].to_string(), end + 4)
        } else if let Some(plain) = tail.strip_prefix('$') {
            let name: String = plain
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let len = name.len() + 1;
            (name, len)
        } else {
            // A range selector's `[`.
            out.push('[');
            rest = &tail[1..];
            continue;
        };
        if GRAFANA_INTERVALS.contains(&name.as_str()) {
            out.push_str("5m");
        } else if defined.contains(&name) {
            out.push_str(".*");
        } else {
            return Err(format!("uses the undefined variable ${name}"));
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The dashboard's test of an expression: 1 when it returns at least one series.
fn returns_data(expr: &str) -> String {
    format!("count({expr}) > bool 0")
}

/// `text` as Go's %q prints it (enough for ASCII PromQL).
fn go_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The instructions of a Containerfile as (KEYWORD, arguments): comments and blank lines
/// dropped, backslash continuations joined.
fn containerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let instruction = std::mem::take(&mut current);
        let (keyword, args) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((&instruction, ""));
        out.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_variables() {
        let defined: BTreeSet<String> = ["pid".to_string()].into();
        assert_eq!(
            grafana_to_promql(r#"rate(x{pid=~"$pid"}[$__rate_interval])"#, &defined).unwrap(),
            r#"rate(x{pid=~".*"}[5m])"#
        );
        assert_eq!(
            grafana_to_promql(r#"x{pid=~"${pid:regex}"}[1h:1m]"#, &defined).unwrap(),
            r#"x{pid=~".*"}[1h:1m]"#
        );
        assert!(grafana_to_promql(r#"x{a=~"$nope"}"#, &defined).is_err());
    }

    #[test]
    fn containerfile_continuations() {
        let parsed = containerfile_instructions("# c\nFROM a AS b\nRUN x \\\n # inner\n y\n");
        assert_eq!(
            parsed,
            [
                ("FROM".into(), "a AS b".into()),
                ("RUN".into(), "x  y".into())
            ]
        );
    }
}
