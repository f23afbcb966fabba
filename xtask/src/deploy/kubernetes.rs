//! deploy/kubernetes/: the manifests against the Kubernetes schemas (kubernetes-validate, in a
//! venv under target/tools/) of the oldest supported release and the newest, what the
//! DaemonSet must hold (hostPID, capabilities as in the unit, the port, the probes, the config),
//! and the PodMonitor against a schema written from the operator's CRD.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::config::check_config;
use super::{Checker, LISTEN_ALL, LISTEN_FLAG, PORT};
use crate::process;
use crate::workspace::Workspace;

/// Pinned so that a schema update never changes the verdict on unchanged manifests.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// Validated against the newest schemas kubernetes-validate has and against the oldest
/// Kubernetes the manifests support: `securityContext.appArmorProfile` exists since 1.30.
const OLDEST_KUBERNETES: &str = "1.30";

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

/// A venv with kubernetes-validate (which brings jsonschema and PyYAML, used directly too).
/// A stamp written last marks a finished install, since a venv cannot be built elsewhere and
/// moved into place.
pub(super) fn ensure_venv(dir: &Path) -> Result<PathBuf> {
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

impl Checker<'_> {
    pub(super) fn kubernetes(&mut self, unit_caps: &BTreeSet<String>) -> Result<()> {
        let rel = Workspace::KUBERNETES_MANIFESTS;
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
                "{rel}: DaemonSet adds capabilities {added:?} but {} grants {unit_caps:?}: they must agree",
                Workspace::SYSTEMD_UNIT
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
    pub(super) fn pod_monitor(&mut self) -> Result<()> {
        let rel = Workspace::POD_MONITOR;
        let schema = self.path(Workspace::POD_MONITOR_SCHEMA);
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
            .load(Workspace::KUBERNETES_MANIFESTS)?
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
}
