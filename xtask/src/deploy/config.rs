//! ctxleak.toml (deploy/systemd/ctxleak.toml, and the copy in the Kubernetes ConfigMap): valid
//! TOML, known keys, sane values. The whole config check is this file.

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::Checker;
use crate::workspace::Workspace;

/// The keys of ctxleak.toml: the long flags of `ctxleak daemon` (those of `ctxleak attach`
/// plus its own), with the dotted ones as tables. Update with the daemon's flags.
const CONFIG_KEYS: &[&str] = &[
    "census-interval",
    "suspect-window-short",
    "suspect-window-long",
    "suspect-min-age",
    "suspect-min-growth",
    "suspect-min-growth-percent",
    "stuck-after",
    "context-grace",
    "rescan-interval",
    "ring-buffer-size",
    "park-times",
    "no-contexts",
    "probe-stats",
    "max-overhead",
    "exe",
    "process-name",
    "cgroup",
    "web.listen-address",
    "log.format",
];
/// The keys whose value is a list of globs (the daemon's process filters).
const GLOB_LIST_KEYS: &[&str] = &["exe", "process-name", "cgroup"];

impl Checker<'_> {
    /// ctxleak.toml and the copy in the ConfigMap: valid TOML, known keys, sane values.
    pub(super) fn config_file(&mut self) -> Result<()> {
        let rel = Workspace::CONFIG_FILE;
        let doc = self.load(rel)?.into_iter().next().unwrap_or(Value::Null);
        check_config(rel, &doc)?;
        self.ok("ctxleak.toml: valid TOML, known keys");
        Ok(())
    }
}

pub(super) fn check_config(name: &str, doc: &Value) -> Result<()> {
    let table = doc
        .as_object()
        .with_context(|| format!("{name}: not a TOML table"))?;
    let mut keys = Vec::new();
    for (key, value) in table {
        match value.as_object() {
            Some(sub) => keys.extend(sub.iter().map(|(k, v)| (format!("{key}.{k}"), v))),
            None => keys.push((key.clone(), value)),
        }
    }
    for (key, value) in keys {
        if !CONFIG_KEYS.contains(&key.as_str()) {
            bail!(
                "{name}: unknown key {key} (known: {})",
                CONFIG_KEYS.join(", ")
            );
        }
        let valid = match key.as_str() {
            "ring-buffer-size" => value
                .as_u64()
                .is_some_and(|n| n >= 4096 && n.is_power_of_two()),
            "park-times" | "no-contexts" | "probe-stats" => value.is_boolean(),
            "suspect-min-growth" => value.as_u64().is_some(),
            "suspect-min-growth-percent" => value.as_f64().is_some_and(|p| p >= 0.0),
            key if GLOB_LIST_KEYS.contains(&key) => value.as_array().is_some_and(|globs| {
                globs
                    .iter()
                    .all(|g| g.as_str().is_some_and(|g| !g.trim().is_empty()))
            }),
            "log.format" => value.as_str().is_some_and(|f| f == "text" || f == "json"),
            "max-overhead" => value
                .as_str()
                .is_some_and(|v| v == "exact" || v == "0" || v.ends_with('%')),
            "web.listen-address" => value.as_str().is_some_and(|a| {
                a.rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            }),
            _ => value.as_str().is_some_and(is_duration),
        };
        if !valid {
            bail!("{name}: {key} = {value} is not a valid value");
        }
    }
    Ok(())
}

/// A humantime-style duration such as `5s`, `1m`, `10m`, `1h30m`, `500ms`.
fn is_duration(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ms", "s", "m", "h", "d"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The keys checked here are the daemon's own (`KEYS` in its config reader, which also
    /// parses the shipped files in its unit tests): the two lists cannot drift apart.
    #[test]
    fn config_keys_are_the_daemons() {
        let source = include_str!("../../../ctxleak-daemon/src/config.rs");
        let start = source
            .find("pub const KEYS: &[&str] = &[")
            .expect("KEYS in ctxleak-daemon/src/config.rs");
        let list = &source[start..];
        let list = &list[..list.find("];").expect("the end of KEYS")];
        let keys: Vec<&str> = list
            .lines()
            .skip(1)
            .filter_map(|line| line.trim().strip_prefix('"')?.strip_suffix("\","))
            .collect();
        assert_eq!(keys, CONFIG_KEYS);
    }

    #[test]
    fn config_values() {
        let good = json!({
            "rescan-interval": "10s",
            "no-contexts": true,
            "suspect-min-growth": 5,
            "suspect-min-growth-percent": 2.5,
            "exe": ["/srv/**"],
            "process-name": [],
            "log": {"format": "json"},
            "web": {"listen-address": ":9789"},
        });
        assert!(check_config("t", &good).is_ok());
        for bad in [
            json!({"exe": "/srv/**"}),
            json!({"cgroup": [""]}),
            json!({"no-contexts": "no"}),
            json!({"log": {"format": "xml"}}),
            json!({"rescan-interval": "10"}),
            json!({"suspect-min-growth": -1}),
            json!({"suspect-min-growth-percent": "10%"}),
            json!({"log": {"level": "info"}}),
        ] {
            assert!(check_config("t", &bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn durations() {
        assert!(is_duration("5s") && is_duration("1h30m") && is_duration("500ms"));
        assert!(!is_duration("5") && !is_duration("s") && !is_duration("5 s") && !is_duration(""));
    }
}
