use which::which;

/// Building this crate needs the `bpf-linker` binary (`cargo xtask setup` installs it). Rebuild
/// when it changes, since cargo cannot express a dependency on a binary.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found: run `cargo xtask setup`"),
    }
}
