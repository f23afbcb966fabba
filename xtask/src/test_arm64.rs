//! `cargo xtask test-arm64`: ctxleak on a real arm64 Linux kernel, from an x86-64 machine.
//!
//! Boots Debian's arm64 kernel (`linux-image-arm64`, fetched with apt for the arm64
//! architecture) under `qemu-system-aarch64` (Debian's `qemu-system-arm`; software emulation,
//! TCG) with an initramfs made here: Debian's static busybox for arm64, the arm64 C library of
//! the cross toolchain, the arm64 `ctxleak` and ctxleak-daemon's integration-test binary
//! (cross-built, `build::ARM64`), and the fixtures they need built with `GOARCH=arm64` by the
//! oldest and newest supported Go. Inside, the tests of [`TESTS`] run as they do on the host
//! (the same comparisons with the fixtures' own truth, tests/common/), and the result comes back
//! over the serial console, which xtask parses: it fails on a failed test, on no result, or
//! when the VM outlives `--timeout`.
//!
//! The test binary finds `ctxleak` and the Go toolchains at the paths they had on the host
//! (compile-time paths): the initramfs puts the arm64 `ctxleak` there, and in place of each
//! toolchain's `go` a shell script that runs `go tool pprof` as an arm64 pprof built from that
//! toolchain's own sources (the census test reads ctxleak's profile with it).

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::build::{self, ARM64};
use crate::{debian, fixtures, go, process, workspace::Workspace};

/// The tests run inside the VM (libtest filters): that ctxleak places its probes there, the
/// exact goroutine count against `runtime.NumGoroutine()`, the census's stacks (and its pprof
/// profile, read by `go tool pprof`) against the runtime's own goroutine profile, and what
/// needs the probes: the context verdicts against the `contexts` fixture's own view (probes
/// in propagateCancel, on its mapassign call and in cancel; the eBPF object passing the arm64
/// verifier) and the exact park times (the gopark probe). And without symbols or DWARF
/// (`-s -w`): the count from the runtime's own arithmetic, with no census between the
/// checkpoints (its inputs found in the stripped builds' arm64 code; stripped, stripped PIE
/// and cgo builds), and the census's stacks of a stripped build (layouts, `allgs` and the
/// wait reasons from arm64 code).
const TESTS: &[&str] = &[
    "bad_input::probes_are_placed_on_arm64",
    "goroutine_count::user_goroutines_match_runtime_numgoroutine_on_every_go_version",
    "goroutine_count::memory_only_counts_by_the_runtimes_own_arithmetic",
    "census::census_stacks_match_the_runtimes_own_goroutine_profile",
    "census::census_stacks_of_stripped_builds_match_the_runtimes_own_goroutine_profile",
    "contexts::context_verdicts_match_the_programs_own_view",
    "park_times::park_times_are_exact_for_goroutines_parked_after_attach",
];

/// The fixtures [`TESTS`] run: program and the host's variant (its suffix) of each.
const FIXTURES: &[(&str, &str)] = &[
    ("phases", ""),
    ("phases", "-stripped"),
    ("phases", "-pie-stripped"),
    ("phases", "-cgo"),
    ("parked", ""),
    ("parked", "-stripped"),
    ("contexts", ""),
];

/// The printed line that ends the run inside the VM, followed by the test binary's exit code.
const DONE: &str = "ctxleak-arm64: tests exited with";

/// Run ctxleak's tests on Debian's arm64 kernel under qemu-system-aarch64.
#[derive(clap::Args)]
pub struct Options {
    /// Give up (and fail) when the VM has not finished by then.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub fn run(ws: &Workspace, options: &Options) -> Result<()> {
    let started = Instant::now();
    let out = ws.arm64_out();
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    if which::which("qemu-system-aarch64").is_err() {
        debian::install(&["qemu-system-arm"], "to boot an arm64 kernel")?;
    }
    debian::add_architecture(ARM64.debian_arch)?;
    let kernel = ensure_kernel(&out)?;
    let busybox = ensure_busybox(&out)?;
    let tests = build_tests(ws)?;
    let ctxleak = ws.cargo_target().join(ARM64.triple).join("release/ctxleak");
    let versions = [go::GO_VERSIONS[0], go::NEWEST];
    let fixtures_dir = out.join("fixtures");
    crate::setup::go_toolchains(ws, &versions)?;
    for version in versions {
        let dir = fixtures_dir.join(format!("go{version}"));
        for (name, suffix) in FIXTURES {
            fixtures::build_cross(ws, version, name, suffix, &ARM64, &dir)?;
        }
        let mut pprof = go::command(ws, version);
        pprof
            .env("GOARCH", ARM64.debian_arch)
            .env("CGO_ENABLED", "0")
            .args(["build", "-o"])
            .arg(dir.join("pprof"))
            .arg("cmd/pprof");
        process::run(&mut pprof)
            .with_context(|| format!("could not build Go {version}'s pprof for arm64"))?;
    }
    let initramfs = out.join("initramfs.cpio");
    let mut image = Initramfs::create(&initramfs)?;
    image.file("bin/busybox", &busybox, 0o755)?;
    for library in [
        "ld-linux-aarch64.so.1",
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
    ] {
        image.file(
            &format!("lib/{library}"),
            &Path::new(ARM64.libraries).join(library),
            0o755,
        )?;
    }
    image.file(&absolute(&ctxleak)?, &ctxleak, 0o755)?;
    image.file("tests", &tests, 0o755)?;
    for version in versions {
        let dir = fixtures_dir.join(format!("go{version}"));
        for (name, suffix) in FIXTURES {
            let name = format!("{name}{suffix}");
            image.file(
                &format!("fixtures/go{version}/{name}"),
                &dir.join(&name),
                0o755,
            )?;
        }
        image.file(
            &format!("fixtures/go{version}/pprof"),
            &dir.join("pprof"),
            0o755,
        )?;
        let shim = format!(
            "#!/bin/busybox sh\n# `go tool pprof ARGS` for the tests: the arm64 pprof of Go {version}.\n[ \"$1 $2\" = \"tool pprof\" ] || {{ echo \"only go tool pprof exists here\" >&2; exit 2; }}\nshift 2\nexec /fixtures/go{version}/pprof \"$@\"\n"
        );
        image.data(&absolute(&ws.go_binary(version))?, shim.as_bytes(), 0o755)?;
    }
    // The tests find the toolchains from ctxleak-daemon's folder (`CARGO_MANIFEST_DIR/..`).
    image.folder(&absolute(&ws.root().join("ctxleak-daemon"))?)?;
    image.data("init", init_script(&versions).as_bytes(), 0o755)?;
    image.finish()?;
    let prepared = started.elapsed();
    let ran = Instant::now();
    let outcome = boot(
        &kernel,
        &initramfs,
        &out.join("console.log"),
        options.timeout,
    )?;
    println!(
        "test-arm64: prepared in {:.0} s, ran in {:.0} s under qemu-system-aarch64 (console: {})",
        prepared.as_secs_f64(),
        ran.elapsed().as_secs_f64(),
        out.join("console.log").display()
    );
    match outcome {
        Some((0, Some(summary))) => {
            println!("test-arm64: {summary}");
            Ok(())
        }
        Some((code, summary)) => bail!(
            "the tests failed on arm64 (exit {code}{}): see the lines above",
            summary.map(|s| format!(", {s}")).unwrap_or_default()
        ),
        None => bail!(
            "the arm64 VM gave no result within {}: see {} (a slower machine may need a larger --timeout)",
            humantime::format_duration(options.timeout),
            out.join("console.log").display()
        ),
    }
}

/// The initramfs's /init: mounts what ctxleak and the tests use, runs the tests, says how they
/// ended (`DONE`) and powers off. /tmp stays the initramfs's own (writable, in memory): the
/// image keeps the checkout's absolute paths, which the test binary has compiled in, and a
/// tmpfs mounted on /tmp would hide a checkout under /tmp (CI's clones).
fn init_script(versions: &[&str]) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
ip link set lo up
echo "ctxleak-arm64: kernel $(uname -r) $(uname -m), $(nproc) CPUs"
CTXLEAK_FIXTURES=/fixtures CTXLEAK_GO_VERSIONS={versions} /tests --test-threads=1 --show-output {tests}
echo "{DONE} $?"
poweroff -f
"#,
        versions = versions.join(","),
        tests = TESTS.join(" "),
    )
}

/// Boots the kernel with the initramfs, the serial console on stdout copied to `log` and
/// echoed; the test binary's exit code and libtest's summary, or None when the VM ends or
/// times out without saying.
fn boot(
    kernel: &Path,
    initramfs: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<Option<(i32, Option<String>)>> {
    let mut qemu = Command::new("qemu-system-aarch64");
    qemu.args(["-machine", "virt", "-cpu", "max", "-smp", "2", "-m", "3072"])
        .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyAMA0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = qemu
        .spawn()
        .with_context(|| format!("could not start `{}`", process::show(&qemu)))?;
    let pid = child.id();
    let stdout = child.stdout.take().context("qemu has no stdout")?;
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            // SAFETY: signal 0 only asks whether our child still exists.
            if unsafe { libc::kill(pid as i32, 0) } != 0 {
                return;
            }
        }
        // SAFETY: our own child, not yet waited for.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let mut file =
        fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut exit = None;
    let mut summary = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end_matches('\r').to_owned();
        println!("arm64| {line}");
        writeln!(file, "{line}").with_context(|| format!("cannot write {}", log.display()))?;
        if line.starts_with("test result:") {
            summary = Some(line.clone());
        }
        if let Some(code) = line.strip_prefix(DONE) {
            exit = code.trim().parse::<i32>().ok();
        }
    }
    let _ = child.wait();
    let _ = watchdog.join();
    Ok(exit.map(|code| (code, summary)))
}

/// The path of `path` as the test binary knows it (as compiled in: absolute, symbolic links
/// not resolved), inside the initramfs (without the leading /).
fn absolute(path: &Path) -> Result<String> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    Ok(absolute
        .to_string_lossy()
        .trim_start_matches('/')
        .to_owned())
}

/// Debian's arm64 kernel image (from the package the `linux-image-arm64` metapackage names).
fn ensure_kernel(out: &Path) -> Result<PathBuf> {
    let dir = out.join("kernel");
    if let Some(found) = find_file(&dir.join("boot"), "vmlinuz-")? {
        return Ok(found);
    }
    let depends =
        process::output(Command::new("apt-cache").args(["depends", "linux-image-arm64:arm64"]))?;
    let package = depends
        .lines()
        .find_map(|line| line.trim().strip_prefix("Depends: "))
        .map(|name| name.trim_end_matches(":arm64").to_owned())
        .context("apt-cache names no kernel package for linux-image-arm64: run `apt-get update`")?;
    debian::extract(&format!("{package}:arm64"), &dir, &["./boot/vmlinuz-*"])?;
    find_file(&dir.join("boot"), "vmlinuz-")?
        .with_context(|| format!("{package} has no boot/vmlinuz-*"))
}

/// Debian's static busybox for arm64.
fn ensure_busybox(out: &Path) -> Result<PathBuf> {
    let dir = out.join("busybox");
    let busybox = dir.join("bin/busybox");
    if !busybox.is_file() {
        debian::extract("busybox-static:arm64", &dir, &["./bin/busybox"])?;
    }
    Ok(busybox)
}

fn find_file(dir: &Path, prefix: &str) -> Result<Option<PathBuf>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(None);
    };
    Ok(entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        }))
}

/// Cross-builds ctxleak-daemon's integration tests (release, as the arm64 `ctxleak` they run):
/// the test binary's path.
fn build_tests(ws: &Workspace) -> Result<PathBuf> {
    let args = [
        "test",
        "--release",
        "--no-run",
        "--package",
        "ctxleak-daemon",
        "--test",
        "tests",
        "--message-format=json-render-diagnostics",
    ];
    let mut cargo = build::cargo(ws, Some(&ARM64), &args)?;
    cargo.stderr(Stdio::inherit());
    let messages = process::output(&mut cargo).context("could not build the tests for arm64")?;
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["target"]["name"] == "tests" && message["profile"]["test"] == true
        })
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo built no `tests` executable for arm64")
}

/// An uncompressed newc initramfs (the kernel unpacks it without decompressing: faster under
/// emulation), with every parent folder of the files added.
struct Initramfs {
    file: std::io::BufWriter<fs::File>,
    folders: std::collections::BTreeSet<String>,
    inode: u32,
}

impl Initramfs {
    fn create(path: &Path) -> Result<Self> {
        let file =
            fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut image = Self {
            file: std::io::BufWriter::new(file),
            folders: Default::default(),
            inode: 1,
        };
        for folder in ["proc", "sys", "dev", "tmp", "bin", "lib"] {
            image.folder(folder)?;
        }
        Ok(image)
    }

    fn folder(&mut self, name: &str) -> Result<()> {
        if name.is_empty() || !self.folders.insert(name.to_owned()) {
            return Ok(());
        }
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.folder(parent)?;
        }
        self.entry(name, &[], 0o040_755)
    }

    fn file(&mut self, name: &str, source: &Path, mode: u32) -> Result<()> {
        let data = fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
        self.data(name, &data, mode)
    }

    fn data(&mut self, name: &str, data: &[u8], mode: u32) -> Result<()> {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.folder(parent)?;
        }
        self.entry(name, data, 0o100_000 | mode)
    }

    fn entry(&mut self, name: &str, data: &[u8], mode: u32) -> Result<()> {
        self.inode += 1;
        let size = u32::try_from(data.len()).with_context(|| format!("{name} is over 4 GiB"))?;
        let mut writer = cpio::newc::Builder::new(name)
            .ino(self.inode)
            .mode(mode)
            .nlink(1)
            .write(&mut self.file, size);
        writer
            .write_all(data)
            .context("cannot write the initramfs")?;
        writer.finish().context("cannot write the initramfs")?;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        cpio::newc::trailer(&mut self.file).context("cannot write the initramfs")?;
        self.file.flush().context("cannot write the initramfs")
    }
}
