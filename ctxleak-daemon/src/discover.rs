//! Finding the processes `ctxleak daemon` may attach to: every process in `/proc`, what it
//! runs and where, whether that executable is a Go program, and the user's filters.

use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::cgroup::{self, ContainerInfo};
use crate::goexe::{ExecutableFile, GoBinaryError};

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("process {pid} exited before it could be read (nothing to do)")]
    Gone { pid: u32 },
    #[error("process {pid} has no executable (a kernel thread or a zombie): nothing to attach to")]
    NoExecutable { pid: u32 },
    #[error(
        "cannot read {}: permission denied (run ctxleak as root, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)",
        path.display()
    )]
    PermissionDenied { path: PathBuf },
    #[error("cannot read {}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("--{flag}: bad glob \"{glob}\": {reason}")]
    BadGlob {
        flag: &'static str,
        glob: String,
        reason: String,
    },
}

/// The PIDs of every process (not thread) in `/proc`, ascending.
pub fn pids() -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        // Only numeric names are processes; threads are under /proc/PID/task and not listed.
        if let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// Identifies an executable file, wherever it is mounted: the same binary run in many
/// containers (or under different paths) is read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExeIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl ExeIdentity {
    /// The file's metadata as an identity.
    pub fn from_metadata(metadata: &std::fs::Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }

    /// The executable `pid` runs now (stat of `/proc/PID/exe`).
    pub fn of_process(pid: u32) -> io::Result<Self> {
        std::fs::metadata(format!("/proc/{pid}/exe")).map(|metadata| Self::from_metadata(&metadata))
    }
}

/// A running process and what it runs.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub pid: u32,
    /// Where the executable is, as the process sees it (readlink of `/proc/PID/exe`, so in
    /// the process's mount namespace, with ` (deleted)` appended if it was replaced): for
    /// people and labels. Open `/proc/PID/exe` to read the file itself.
    pub exe_path: PathBuf,
    /// The executable file (stat of `/proc/PID/exe`, which reaches the file even in another
    /// mount namespace).
    pub identity: ExeIdentity,
    /// The process name (`/proc/PID/comm`, at most 15 bytes).
    pub comm: String,
    pub container: ContainerInfo,
}

/// Reads what `/proc/PID` says about a process.
pub fn candidate(pid: u32) -> Result<Candidate, DiscoverError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let exe = proc.join("exe");
    let exe_path = match std::fs::read_link(&exe) {
        Ok(path) => path,
        // Kernel threads (and zombies) have no executable; the link fails the same way
        // when the process is gone, which /proc/PID itself tells apart.
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(match std::fs::symlink_metadata(&proc) {
                Ok(_) => DiscoverError::NoExecutable { pid },
                Err(_) => DiscoverError::Gone { pid },
            });
        }
        Err(error) => return Err(proc_error(pid, exe, error)),
    };
    let metadata = std::fs::metadata(&exe).map_err(|error| proc_error(pid, exe, error))?;
    let comm_path = proc.join("comm");
    let comm = std::fs::read_to_string(&comm_path)
        .map_err(|error| proc_error(pid, comm_path, error))?
        .trim_end_matches('\n')
        .to_owned();
    let container =
        cgroup::read(pid).map_err(|error| proc_error(pid, proc.join("cgroup"), error))?;
    Ok(Candidate {
        pid,
        exe_path,
        identity: ExeIdentity::from_metadata(&metadata),
        comm,
        container,
    })
}

/// Classifies an error reading a file of `/proc/PID`: by then the process existed, so a
/// missing file or ESRCH means it exited.
fn proc_error(pid: u32, path: PathBuf, error: io::Error) -> DiscoverError {
    match error.kind() {
        io::ErrorKind::NotFound => DiscoverError::Gone { pid },
        _ if error.raw_os_error() == Some(libc::ESRCH) => DiscoverError::Gone { pid },
        io::ErrorKind::PermissionDenied => DiscoverError::PermissionDenied { path },
        _ => DiscoverError::Io {
            path,
            source: error,
        },
    }
}

/// Whether the file at `path` is a Go executable: an ELF file with a `.go.buildinfo`
/// section, which the Go linker writes into every executable, stripped ones included.
///
/// Cheap enough to run on every exec on the host, whatever the file: it reads the ELF
/// header, the section headers and the section names, each read bounded, never the rest of
/// the file ([`ExecutableFile::check_go`]). Anything that is not an ELF file with section
/// headers (a script, an empty or truncated file, a directory, a FIFO, a device) is
/// `Ok(false)`; only failing to open the file is an error.
pub fn is_go_executable(path: &Path) -> Result<bool, DiscoverError> {
    let file = match ExecutableFile::open(path, path) {
        Ok(file) => file,
        Err(GoBinaryError::Read { source, .. }) => {
            return Err(match source.kind() {
                io::ErrorKind::PermissionDenied => DiscoverError::PermissionDenied {
                    path: path.to_owned(),
                },
                _ => DiscoverError::Io {
                    path: path.to_owned(),
                    source,
                },
            });
        }
        // Not a regular file.
        Err(_) => return Ok(false),
    };
    Ok(file.check_go().is_ok())
}

/// A glob as the filters compile it: `*` and `?` do not match `/`, `**` does.
pub(crate) fn glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build()
}

/// Which processes to attach to, from `--exe`, `--process-name` and `--cgroup` globs.
///
/// Within one filter any of its globs may match (OR); across filters, every filter that was
/// given must match (AND); a filter given no globs matches everything, so no filters at all
/// means every process. Globs match the whole string, and `*` and `?` do not match `/`
/// while `**` does:
/// - `exe` matches the executable's path ([`Candidate::exe_path`]): `/usr/local/bin/*`,
///   `/opt/**`, `**/kubelet`;
/// - `process-name` matches the process name ([`Candidate::comm`], at most 15 bytes):
///   `api-*`;
/// - `cgroup` matches the cgroup path ([`ContainerInfo::cgroup`]): `/kubepods.slice/**`,
///   `/system.slice/*.service`.
#[derive(Debug, Clone)]
pub struct Filters {
    exe: Filter,
    process_name: Filter,
    cgroup: Filter,
}

#[derive(Debug, Clone)]
struct Filter {
    globs: Vec<String>,
    set: GlobSet,
}

impl Filter {
    fn new(flag: &'static str, globs: &[String]) -> Result<Filter, DiscoverError> {
        let mut builder = GlobSetBuilder::new();
        for pattern in globs {
            builder.add(glob(pattern).map_err(|error| DiscoverError::BadGlob {
                flag,
                glob: pattern.clone(),
                reason: error.kind().to_string(),
            })?);
        }
        let set = builder.build().map_err(|error| DiscoverError::BadGlob {
            flag,
            glob: error.glob().unwrap_or_default().to_owned(),
            reason: error.kind().to_string(),
        })?;
        Ok(Filter {
            globs: globs.to_vec(),
            set,
        })
    }

    fn matches(&self, text: impl AsRef<Path>) -> bool {
        self.globs.is_empty() || self.set.is_match(text)
    }

    fn describe(&self, flag: &str) -> Option<String> {
        if self.globs.is_empty() {
            return None;
        }
        let globs: Vec<String> = self
            .globs
            .iter()
            .map(|glob| format!("\"{glob}\""))
            .collect();
        Some(format!("{flag} matches {}", globs.join(" or ")))
    }
}

impl Filters {
    pub fn new(
        exe: &[String],
        process_name: &[String],
        cgroup: &[String],
    ) -> Result<Filters, DiscoverError> {
        Ok(Filters {
            exe: Filter::new("exe", exe)?,
            process_name: Filter::new("process-name", process_name)?,
            cgroup: Filter::new("cgroup", cgroup)?,
        })
    }

    pub fn matches(&self, c: &Candidate) -> bool {
        self.exe.matches(&c.exe_path)
            && self.process_name.matches(&c.comm)
            && self.cgroup.matches(&c.container.cgroup)
    }

    /// The filters in words, for a log line: `all processes` when there are none.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            self.exe.describe("exe"),
            self.process_name.describe("process-name"),
            self.cgroup.describe("cgroup"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            "all processes".to_owned()
        } else {
            format!("processes whose {}", parts.join(", and "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(exe: &str, comm: &str, cgroup: &str) -> Candidate {
        Candidate {
            pid: 1,
            exe_path: exe.into(),
            identity: ExeIdentity { dev: 1, ino: 1 },
            comm: comm.into(),
            container: ContainerInfo {
                cgroup: cgroup.into(),
                ..ContainerInfo::default()
            },
        }
    }

    fn strings(globs: &[&str]) -> Vec<String> {
        globs.iter().map(|glob| glob.to_string()).collect()
    }

    fn filters(exe: &[&str], name: &[&str], cgroup: &[&str]) -> Filters {
        Filters::new(&strings(exe), &strings(name), &strings(cgroup)).unwrap()
    }

    #[test]
    fn no_filters_match_everything() {
        let all = filters(&[], &[], &[]);
        assert!(all.matches(&process("/usr/bin/kubelet", "kubelet", "/")));
        assert!(all.matches(&process("", "", "")));
        assert_eq!(all.describe(), "all processes");
    }

    #[test]
    fn exe_globs() {
        let f = filters(&["/usr/local/bin/*", "/opt/**"], &[], &[]);
        assert!(f.matches(&process("/usr/local/bin/api", "api", "/")));
        assert!(f.matches(&process("/opt/app/bin/server", "server", "/")));
        // `*` does not cross `/`.
        assert!(!f.matches(&process("/usr/local/bin/sub/api", "api", "/")));
        assert!(!f.matches(&process("/usr/bin/api", "api", "/")));
        let f = filters(&["**/kubelet"], &[], &[]);
        assert!(f.matches(&process("/usr/bin/kubelet", "kubelet", "/")));
        assert!(!f.matches(&process("/usr/bin/kubelet-helper", "kubelet", "/")));
    }

    #[test]
    fn process_name_globs() {
        let f = filters(&[], &["api-*", "worker"], &[]);
        assert!(f.matches(&process("/x", "api-gateway", "/")));
        assert!(f.matches(&process("/x", "worker", "/")));
        assert!(!f.matches(&process("/x", "workers", "/")));
    }

    #[test]
    fn cgroup_globs() {
        let f = filters(&[], &[], &["/kubepods.slice/**"]);
        assert!(f.matches(&process(
            "/x",
            "x",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podabc.slice/cri-containerd-abc.scope"
        )));
        assert!(!f.matches(&process("/x", "x", "/system.slice/containerd.service")));
        let f = filters(&[], &[], &["/system.slice/*.service"]);
        assert!(f.matches(&process("/x", "x", "/system.slice/containerd.service")));
        assert!(!f.matches(&process("/x", "x", "/system.slice/a.service/b.service")));
    }

    #[test]
    fn filters_combine_with_and() {
        let f = filters(
            &["/usr/bin/*"],
            &["kube*", "containerd"],
            &["/system.slice/**"],
        );
        assert!(f.matches(&process(
            "/usr/bin/kubelet",
            "kubelet",
            "/system.slice/kubelet.service"
        )));
        assert!(f.matches(&process(
            "/usr/bin/containerd",
            "containerd",
            "/system.slice/containerd.service"
        )));
        // Each filter failing alone.
        assert!(!f.matches(&process(
            "/opt/kubelet",
            "kubelet",
            "/system.slice/kubelet.service"
        )));
        assert!(!f.matches(&process(
            "/usr/bin/dockerd",
            "dockerd",
            "/system.slice/docker.service"
        )));
        assert!(!f.matches(&process(
            "/usr/bin/kubelet",
            "kubelet",
            "/user.slice/session-1.scope"
        )));
        assert_eq!(
            f.describe(),
            "processes whose exe matches \"/usr/bin/*\", and process-name matches \"kube*\" or \
             \"containerd\", and cgroup matches \"/system.slice/**\""
        );
    }

    #[test]
    fn bad_glob_names_flag_and_glob() {
        let error = Filters::new(&[], &strings(&["api-[x"]), &[]).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("--process-name: bad glob \"api-[x\": "),
            "{message}"
        );
        assert!(!message.contains('\n'));
        let error = Filters::new(&strings(&["{a,b"]), &[], &[]).unwrap_err();
        assert!(
            error.to_string().starts_with("--exe: bad glob \"{a,b\""),
            "{error}"
        );
    }

    #[test]
    fn own_process() {
        let me = candidate(std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.exe_path.is_absolute(), "{me:?}");
        assert_eq!(me.exe_path, std::env::current_exe().unwrap());
        let metadata = std::fs::metadata(&me.exe_path).unwrap();
        assert_eq!(
            me.identity,
            ExeIdentity {
                dev: metadata.dev(),
                ino: metadata.ino()
            }
        );
        // The main thread's name: the test binary's file name, cut to 15 bytes.
        assert!(!me.comm.is_empty() && me.comm.len() <= 15, "{me:?}");
        assert!(!me.comm.ends_with('\n'));
        assert!(me.container.cgroup.starts_with('/'));
    }

    #[test]
    fn vanished_process_is_gone() {
        // Above the kernel's PID_MAX_LIMIT (4194304): never a process.
        let error = candidate(4_194_305).unwrap_err();
        assert!(
            matches!(error, DiscoverError::Gone { pid: 4_194_305 }),
            "{error}"
        );
    }

    #[test]
    fn kernel_thread_has_no_executable() {
        // PID 2 is kthreadd outside a PID namespace; in one it may not exist.
        let is_kthreadd =
            std::fs::read_to_string("/proc/2/comm").is_ok_and(|comm| comm.trim_end() == "kthreadd");
        if !is_kthreadd {
            eprintln!("skipped: PID 2 is not kthreadd here");
            return;
        }
        let error = candidate(2).unwrap_err();
        assert!(
            matches!(error, DiscoverError::NoExecutable { pid: 2 }),
            "{error}"
        );
    }

    #[test]
    fn pids_include_ours() {
        let pids = pids().unwrap();
        assert!(pids.contains(&std::process::id()));
        assert!(pids.is_sorted());
    }

    #[test]
    fn non_go_files() {
        assert!(!is_go_executable(Path::new("/proc/self/exe")).unwrap());
        assert!(!is_go_executable(Path::new("/bin/sh")).unwrap());
        let dir = std::env::temp_dir().join(format!("ctxleak-discover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("script.sh");
        std::fs::write(&script, "#!/bin/sh\necho .go.buildinfo\n").unwrap();
        assert!(!is_go_executable(&script).unwrap());
        let empty = dir.join("empty");
        std::fs::write(&empty, "").unwrap();
        assert!(!is_go_executable(&empty).unwrap());
        let truncated = dir.join("truncated");
        let elf = std::fs::read("/proc/self/exe").unwrap();
        std::fs::write(&truncated, &elf[..100]).unwrap();
        assert!(!is_go_executable(&truncated).unwrap());
        assert!(!is_go_executable(&dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            is_go_executable(Path::new("/nonexistent/ctxleak")),
            Err(DiscoverError::Io { .. })
        ));
    }

    #[test]
    fn go_fixtures() {
        let Some(fixtures) = std::env::var_os("CTXLEAK_FIXTURES") else {
            eprintln!("skipped: CTXLEAK_FIXTURES is not set");
            return;
        };
        let dir = Path::new(&fixtures).join("go1.25.5");
        for name in ["phases", "phases-stripped", "phases-pie-stripped"] {
            let path = dir.join(name);
            if name != "phases" && !path.exists() {
                continue;
            }
            assert!(is_go_executable(&path).unwrap(), "{}", path.display());
        }
    }
}
