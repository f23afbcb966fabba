use which::which;

/// Building this crate needs the `bpf-linker` binary (`cargo xtask setup` installs it). Rebuild
/// when it changes, since cargo cannot express a dependency on a binary. aya-build passes
/// `--cfg bpf_target_arch="…"` (src/regs.rs picks the registers by it): declared here.
fn main() {
    println!(r#"cargo::rustc-check-cfg=cfg(bpf_target_arch, values("x86_64", "aarch64"))"#);
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found: run `cargo xtask setup`"),
    }
}
