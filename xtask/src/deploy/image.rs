//! deploy/Containerfile and its ignore file: no image can be built here (no container engine,
//! no registry), so the file is checked for what would break the build or the deployment.

use anyhow::{Context, Result, bail};

use super::{BINARY, Checker, LISTEN_ALL, LISTEN_FLAG};
use crate::workspace::Workspace;

impl Checker<'_> {
    /// No image can be built here (no container engine, no registry), so the Containerfile
    /// is checked for what would break the build or the deployment: instructions, stages and
    /// their references, the runtime base, the binary's path and the command line.
    pub(super) fn containerfile(&mut self) -> Result<()> {
        let rel = Workspace::CONTAINERFILE;
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
        let ignore_rel = Workspace::CONTAINERFILE_IGNORE;
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
