//! Builds `ctxleak-ebpf` for the BPF target (with nightly and bpf-linker, both installed by
//! `cargo xtask setup`) and leaves the object in OUT_DIR, where `include_bytes_aligned!`
//! embeds it in the `ctxleak` binary.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    // Without the `probes` feature nothing embeds the eBPF object.
    if std::env::var_os("CARGO_FEATURE_PROBES").is_none() {
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|package| package.name.as_str() == "ctxleak-ebpf")
        .ok_or_else(|| anyhow!("package ctxleak-ebpf not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    // `bench-floor` builds the benchmarks' spinning floor program in too (`floor_spin`).
    let features: &[&str] = if std::env::var_os("CARGO_FEATURE_BENCH_FLOOR").is_some() {
        &["bench-floor"]
    } else {
        &[]
    };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            features,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
