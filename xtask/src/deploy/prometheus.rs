//! deploy/prometheus/: the scrape config (and its commented Kubernetes example), the alerting
//! rules and their unit tests, by promtool; and every ctxleak_* metric the alerts and the
//! dashboard use against those ctxleak-daemon/src/metrics.rs registers. promtool and the
//! Prometheus server come from Debian's package, extracted under target/tools/ (the tests use
//! the server too).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Checker, PORT, dump, gist};
use crate::workspace::Workspace;
use crate::{debian, process};

/// promtool from PATH when there is one, else Debian's (see `ensure_prometheus`).
pub(super) fn ensure_promtool(ws: &Workspace) -> Result<PathBuf> {
    match which::which("promtool") {
        Ok(path) => Ok(path),
        Err(_) => Ok(ensure_prometheus(ws)?.promtool),
    }
}

/// The Prometheus server and promtool, as Debian's prometheus package builds them.
pub struct PrometheusTools {
    pub prometheus: PathBuf,
    pub promtool: PathBuf,
}

/// The server and promtool from Debian's prometheus package, extracted into
/// target/tools/prometheus/: `apt-get download` and `dpkg-deb`, with no maintainer scripts
/// run, so nothing is installed system-wide and no Prometheus service is set up or started.
/// deploy-check uses promtool; the tests (`cargo xtask test`) start the server on loopback.
pub fn ensure_prometheus(ws: &Workspace) -> Result<PrometheusTools> {
    let dir = ws.prometheus_tools();
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
    debian::extract(
        "prometheus",
        &dir,
        &["./usr/bin/prometheus", "./usr/bin/promtool"],
    )?;
    for binary in [&tools.prometheus, &tools.promtool] {
        process::output(Command::new(binary).arg("--version"))
            .with_context(|| format!("the extracted {} does not run", binary.display()))?;
    }
    Ok(tools)
}

impl Checker<'_> {
    pub(super) fn prometheus(&mut self) -> Result<()> {
        let promtool = self.tools.promtool.clone();
        let rel = Workspace::PROMETHEUS_CONFIG;
        // check config also checks the rule files it names (alerts.yml).
        self.tool(
            rel,
            "promtool check config",
            &mut self.promtool_beside(["check", "config"], rel)?,
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

        let rules = Workspace::ALERTS;
        self.tool(
            rules,
            "promtool check rules",
            &mut self.promtool_beside(["check", "rules"], rules)?,
            false,
        )?;
        self.ok("alerts.yml: promtool check rules");
        let tests = Workspace::ALERT_TESTS;
        self.tool(
            tests,
            "promtool test rules",
            &mut self.promtool_beside(["test", "rules"], tests)?,
            false,
        )?;
        self.ok("alerts.yml: promtool test rules alerts_test.yml");
        Ok(())
    }

    /// `promtool COMMAND FILE` run in the file's folder, by its name: the Prometheus files name
    /// each other (rule files, the rules under test) relative to it.
    fn promtool_beside(&self, command: [&str; 2], rel: &str) -> Result<Command> {
        let path = self.path(rel);
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            bail!("{rel}: not a file in a folder");
        };
        let mut cmd = Command::new(&self.tools.promtool);
        cmd.args(command).arg(name).current_dir(dir);
        Ok(cmd)
    }

    /// Every ctxleak_* metric the alerts, their tests and the dashboard use must be one that
    /// ctxleak-daemon/src/metrics.rs registers (counters get `_total`).
    pub(super) fn metric_names(&mut self) -> Result<()> {
        let source_rel = Workspace::DAEMON_METRICS;
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
                "{source_rel}: found no registry.register(\"name\", ...) calls: update xtask/src/deploy/prometheus.rs's reading of it"
            );
        }
        let files = [
            Workspace::ALERTS,
            Workspace::ALERT_TESTS,
            Workspace::DASHBOARD,
            Workspace::DASHBOARD_SERIES,
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
