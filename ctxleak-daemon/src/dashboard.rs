//! The PromQL of ctxleak's Grafana dashboard (deploy/grafana/ctxleak-dashboard.json), read one
//! way for both of its checks: `cargo xtask deploy-check`, which parses and evaluates every
//! expression with promtool over synthetic series, and the Prometheus integration test, which
//! runs them against a real Prometheus scraping ctxleak.

use serde_json::Value;

/// One expression of a dashboard, Grafana's variables (`$pid`, `$__rate_interval`) still in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DashboardQuery {
    /// What it is, for messages: `variable NAME` or `panel ID "TITLE" query REF`.
    pub what: String,
    pub expr: String,
}

/// Every expression of `dashboard`: each query variable's selector (from
/// `label_values(SELECTOR, LABEL)`), then each panel's queries, the panels of rows included. An
/// error names the variable or the panel query that cannot be read.
pub fn dashboard_queries(dashboard: &Value) -> Result<Vec<DashboardQuery>, String> {
    let mut queries = Vec::new();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten();
    for variable in variables.filter(|v| v["type"] == "query") {
        let name = variable["name"].as_str().unwrap_or("?");
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or("");
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .map(|(selector, _)| selector.trim())
            .ok_or_else(|| {
                format!("variable {name}: expected label_values(SELECTOR, LABEL), got {query:?}")
            })?;
        queries.push(DashboardQuery {
            what: format!("variable {name}"),
            expr: selector.to_owned(),
        });
    }
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        let what = format!(
            "panel {} {:?}",
            panel["id"],
            panel["title"].as_str().unwrap_or("")
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            let ref_id = target["refId"].as_str().unwrap_or("");
            let expr = target["expr"]
                .as_str()
                .filter(|expr| !expr.trim().is_empty())
                .ok_or_else(|| format!("{what} query {ref_id}: no expr"))?;
            queries.push(DashboardQuery {
                what: format!("{what} query {ref_id}"),
                expr: expr.to_owned(),
            });
        }
    }
    Ok(queries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_then_panels_rows_included() {
        let dashboard = serde_json::json!({
            "templating": {"list": [
                {"name": "datasource", "type": "datasource"},
                {"name": "pid", "type": "query", "query": {"query": "label_values(ctxleak_goroutines, pid)"}},
            ]},
            "panels": [
                {"id": 1, "title": "a row", "type": "row", "panels": [
                    {"id": 2, "title": "inner", "targets": [{"refId": "A", "expr": "up"}]},
                ]},
            ],
        });
        let queries = dashboard_queries(&dashboard).expect("readable");
        let got: Vec<(&str, &str)> = queries
            .iter()
            .map(|q| (q.what.as_str(), q.expr.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("variable pid", "ctxleak_goroutines"),
                ("panel 2 \"inner\" query A", "up"),
            ]
        );
        let broken = serde_json::json!({"templating": {"list": [
            {"name": "pid", "type": "query", "query": "pid"},
        ]}});
        assert!(
            dashboard_queries(&broken)
                .unwrap_err()
                .starts_with("variable pid:")
        );
    }
}
