//! deploy/grafana/ctxleak-dashboard.json: its structure, then every PromQL expression (panels
//! and variables, Grafana's variables replaced) parsed by promtool as recording rules and
//! evaluated over dashboard-test-series.json, where each must return data.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Checker, dump, gist};
use crate::workspace::Workspace;

/// Grafana's interval variables, replaced by `5m` before PromQL is parsed.
const GRAFANA_INTERVALS: &[&str] = &["__rate_interval", "__interval", "__range"];

/// When the dashboard's expressions are evaluated over the synthetic series (an hour long).
const DASHBOARD_EVAL_TIME: &str = "59m";

impl Checker<'_> {
    /// The dashboard's structure, then every PromQL expression (panels and variables, with
    /// Grafana's variables replaced) parsed as recording rules and evaluated over
    /// dashboard-test-series.json: each must return at least one series.
    pub(super) fn dashboard(&mut self) -> Result<()> {
        let rel = Workspace::DASHBOARD;
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
        for var in vars.iter().filter(|v| v["type"] == "query") {
            let name = var["name"].as_str().unwrap_or("?");
            if var["datasource"]["uid"] != "${datasource}" {
                bail!(
                    "{rel}: variable {name}: datasource must be the ${{datasource}} variable, so the import asks for one"
                );
            }
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
            }
        }
        self.ok(&format!("dashboard: structure, {} panels", ids.len()));
        // (name for messages, PromQL): the expressions as the Prometheus test reads them too.
        let exprs: Vec<(String, String)> = ctxleak_daemon::dashboard::dashboard_queries(&dash)
            .map_err(|e| anyhow::anyhow!("{rel}: {e}"))?
            .into_iter()
            .map(|query| {
                let promql = grafana_to_promql(&query.expr, &defined)
                    .map_err(|e| anyhow::anyhow!("{rel}: {}: {e}", query.what))?;
                Ok((query.what, promql))
            })
            .collect::<Result<_>>()?;

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
        let series: Value = serde_json::from_str(&self.read(Workspace::DASHBOARD_SERIES)?)
            .with_context(|| format!("{}: not JSON", Workspace::DASHBOARD_SERIES))?;
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
            &format!(
                "returns nothing over {} (wrong metric, label or join?)",
                Workspace::DASHBOARD_SERIES
            ),
        )?;
        self.ok("dashboard: every expression returns data over the synthetic series");
        Ok(())
    }

    /// `promtool COMMAND FILE` on a file made from the dashboard's expressions (`exprs`: what
    /// each is, and its PromQL); when it fails, the one-line error names the first expression
    /// whose `needle` (by index and PromQL) its output contains, with `problem`.
    pub(super) fn promtool_on_dashboard(
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
}
