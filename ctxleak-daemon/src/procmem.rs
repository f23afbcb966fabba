//! Reading a target process's memory from outside, without stopping it.
//!
//! Reads go through `/proc/PID/mem` (root or CAP_SYS_PTRACE). They are racy by nature: the
//! target keeps running, so callers must tolerate values that change under them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot open the memory of PID {pid}")]
    Open { pid: u32, source: io::Error },
    #[error("cannot read {len} bytes at {address:#x} in PID {pid}")]
    Read {
        pid: u32,
        address: u64,
        len: usize,
        source: io::Error,
    },
    #[error("cannot read /proc/{pid}/maps")]
    Maps { pid: u32, source: io::Error },
    #[error("PID {pid} has no mapping of {exe} at file offset 0")]
    NoMapping { pid: u32, exe: String },
}

impl MemoryError {
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Self::Open { source, .. } | Self::Read { source, .. } | Self::Maps { source, .. } => {
                Some(source)
            }
            Self::NoMapping { .. } => None,
        }
    }
}

pub struct ProcessMemory {
    pid: u32,
    mem: File,
    /// Whether `process_vm_readv` may be used; cleared for good when the kernel refuses it
    /// (not built in, or forbidden where /proc/PID/mem is allowed).
    vectored: AtomicBool,
}

/// `read_many` splits reads of at least this many bytes between two threads.
const PARALLEL_READ_BYTES: usize = 1 << 20;

/// Most ranges one `process_vm_readv` takes (the kernel's UIO_MAXIOV).
const MAX_IOVECS: usize = 1024;

impl ProcessMemory {
    pub fn open(pid: u32) -> Result<Self, MemoryError> {
        let mem = File::open(format!("/proc/{pid}/mem"))
            .map_err(|source| MemoryError::Open { pid, source })?;
        Ok(Self {
            pid,
            mem,
            vectored: AtomicBool::new(true),
        })
    }

    /// Reads every `(address, buffer)` of `reads`, each with the outcome `read_exact` would
    /// have, in far fewer system calls: `process_vm_readv` with up to 1024 ranges per call. A
    /// range it cannot read is read again alone through /proc/PID/mem (which can read some
    /// memory `process_vm_readv` cannot), so only what `read_exact` fails on fails here. For
    /// many small reads, one `read_exact` each costs a system call each (about 1 µs here).
    /// Returns whether each range was read.
    ///
    /// Large reads are split between two threads: the kernel's cost is per page pinned, and
    /// two cores pin twice as many (a census reads tens of megabytes from 100 000 places).
    pub fn read_many(&self, reads: &mut [(u64, &mut [u8])]) -> Vec<bool> {
        let total: usize = reads.iter().map(|(_, buf)| buf.len()).sum();
        let parallel = total >= PARALLEL_READ_BYTES
            && reads.len() >= 2
            && std::thread::available_parallelism().is_ok_and(|cores| cores.get() > 1);
        if !parallel {
            return self.read_many_here(reads);
        }
        // Two halves by bytes, each at least one range.
        let mut bytes = 0;
        let middle = reads
            .iter()
            .position(|(_, buf)| {
                bytes += buf.len();
                bytes >= total / 2
            })
            .map_or(1, |index| index + 1)
            .clamp(1, reads.len() - 1);
        let count = reads.len();
        let (first, second) = reads.split_at_mut(middle);
        // The second half goes to a helper thread; if none can be started, it is read here.
        let second = std::sync::Mutex::new(Some(second));
        let read_second = || match second.lock().map(|mut half| half.take()) {
            Ok(Some(half)) => self.read_many_here(half),
            _ => Vec::new(),
        };
        std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("ctxleak-read".into())
                .spawn_scoped(scope, read_second);
            let mut read = self.read_many_here(first);
            match helper.map(|helper| helper.join()) {
                Ok(Ok(second_read)) => read.extend(second_read),
                _ => read.extend(read_second()),
            }
            // Whatever happened to the helper, one answer per range (unread: false).
            read.resize(count, false);
            read
        })
    }

    fn read_many_here(&self, reads: &mut [(u64, &mut [u8])]) -> Vec<bool> {
        let mut read = vec![false; reads.len()];
        let mut next = 0;
        while next < reads.len() {
            if !self.vectored.load(Ordering::Relaxed) {
                for ((address, buf), read) in reads[next..].iter_mut().zip(&mut read[next..]) {
                    *read = self.read_exact(*address, buf).is_ok();
                }
                break;
            }
            let end = reads.len().min(next + MAX_IOVECS);
            let batch = &mut reads[next..end];
            let (local, remote): (Vec<libc::iovec>, Vec<libc::iovec>) = batch
                .iter_mut()
                .map(|(address, buf)| {
                    (
                        libc::iovec {
                            iov_base: buf.as_mut_ptr().cast(),
                            iov_len: buf.len(),
                        },
                        libc::iovec {
                            iov_base: *address as usize as *mut libc::c_void,
                            iov_len: buf.len(),
                        },
                    )
                })
                .unzip();
            // SAFETY: every local iovec is a distinct `&mut [u8]` of `reads`, borrowed
            // mutably for the call, with its own length; the remote ones are only addresses
            // in the target, which the kernel checks. The counts are at most 1024.
            let copied = unsafe {
                libc::process_vm_readv(
                    libc::pid_t::try_from(self.pid).unwrap_or(libc::pid_t::MAX),
                    local.as_ptr(),
                    local.len() as libc::c_ulong,
                    remote.as_ptr(),
                    remote.len() as libc::c_ulong,
                    0,
                )
            };
            let copied = match usize::try_from(copied) {
                Ok(copied) => copied,
                Err(_) => {
                    let error = io::Error::last_os_error().raw_os_error();
                    if matches!(
                        error,
                        Some(libc::ENOSYS | libc::EPERM | libc::EACCES | libc::ESRCH)
                    ) {
                        self.vectored.store(false, Ordering::Relaxed);
                        continue;
                    }
                    // The first range could not be read (EFAULT).
                    0
                }
            };
            // The kernel stops at the first range it cannot read completely.
            let mut done = 0usize;
            let mut index = next;
            for (_, buf) in batch.iter() {
                if done.saturating_add(buf.len()) > copied {
                    break;
                }
                done += buf.len();
                read[index] = true;
                index += 1;
            }
            if let Some((address, buf)) = reads.get_mut(index) {
                read[index] = self.read_exact(*address, buf).is_ok();
                index += 1;
            }
            next = index;
        }
        read
    }

    pub fn read_exact(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.mem
            .read_exact_at(buf, address)
            .map_err(|source| MemoryError::Read {
                pid: self.pid,
                address,
                len: buf.len(),
                source,
            })
    }

    pub fn read_u64(&self, address: u64) -> Result<u64, MemoryError> {
        let mut buf = [0u8; 8];
        self.read_exact(address, &mut buf)?;
        Ok(u64::from_le_bytes(buf))
    }
}

/// Runtime address minus link-time address for the executable file `exe` (in practice
/// `/proc/PID/exe`): the start of its mapping at file offset 0 minus `first_segment_address`
/// (page-aligned). The mapping is found by device and inode, not by path, so it works when
/// the target runs in another mount namespace (a container), where paths differ.
pub fn load_bias(pid: u32, exe: &Path, first_segment_address: u64) -> Result<u64, MemoryError> {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = std::fs::metadata(exe).map_err(|source| MemoryError::Maps { pid, source })?;
    let file = MappedFile {
        major: libc::major(metadata.dev()),
        minor: libc::minor(metadata.dev()),
        inode: metadata.ino(),
    };
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|source| MemoryError::Maps { pid, source })?;
    let start = parse_maps_start(&maps, file).ok_or_else(|| MemoryError::NoMapping {
        pid,
        exe: exe.display().to_string(),
    })?;
    Ok(start.wrapping_sub(first_segment_address & !0xfff))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MappedFile {
    major: u32,
    minor: u32,
    inode: u64,
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    start: u64,
    end: u64,
    /// Where in the file the mapping starts.
    offset: u64,
    file: MappedFile,
}

/// The lines of `/proc/PID/maps` ("start-end perms offset major:minor inode   path") that
/// parse.
fn mappings(maps: &str) -> impl Iterator<Item = Mapping> + '_ {
    maps.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let _perms = fields.next()?;
        let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
        let (major, minor) = fields.next()?.split_once(':')?;
        let inode: u64 = fields.next()?.parse().ok()?;
        Some(Mapping {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            offset,
            file: MappedFile {
                major: u32::from_str_radix(major, 16).ok()?,
                minor: u32::from_str_radix(minor, 16).ok()?,
                inode,
            },
        })
    })
}

/// The start address of the first mapping of `file` at file offset 0.
fn parse_maps_start(maps: &str, file: MappedFile) -> Option<u64> {
    mappings(maps)
        .find(|mapping| mapping.offset == 0 && mapping.file == file)
        .map(|mapping| mapping.start)
}

/// Where in its file the code at `address` of this process lies (for a uprobe on
/// ctxleak's own code), if a file maps it.
pub fn own_file_offset(address: u64) -> Option<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    mappings(&maps)
        .find(|mapping| (mapping.start..mapping.end).contains(&address) && mapping.file.inode != 0)
        .map(|mapping| address - mapping.start + mapping.offset)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `read_many` on this very process: readable ranges are read, unmapped ones fail alone,
    /// with /proc/PID/mem and with process_vm_readv refused.
    #[test]
    fn reads_many_ranges_and_fails_only_the_unreadable_ones() {
        let data: Vec<u8> = (0..=255).cycle().take(3 * 4096).collect();
        let base = data.as_ptr() as u64;
        let memory = ProcessMemory::open(std::process::id()).unwrap();
        for vectored in [true, false] {
            memory.vectored.store(vectored, Ordering::Relaxed);
            // 2500 ranges (three calls), with an unreadable one (page 0) every 7th.
            let addresses: Vec<u64> = (0..2500u64)
                .map(|i| {
                    if i % 7 == 3 {
                        16
                    } else {
                        base + (i * 13) % 8000
                    }
                })
                .collect();
            let mut buffers = vec![[0u8; 40]; addresses.len()];
            let mut reads: Vec<(u64, &mut [u8])> = addresses
                .iter()
                .zip(buffers.iter_mut())
                .map(|(&address, buf)| (address, &mut buf[..]))
                .collect();
            let read = memory.read_many(&mut reads);
            // process_vm_readv works here: the first pass went through it.
            assert_eq!(memory.vectored.load(Ordering::Relaxed), vectored);
            for (i, (&address, buf)) in addresses.iter().zip(&buffers).enumerate() {
                if address == 16 {
                    assert!(!read[i], "{i}");
                } else {
                    let at = usize::try_from(address - base).unwrap();
                    assert!(read[i], "{i}");
                    assert_eq!(&buf[..], &data[at..at + 40], "{i}");
                }
            }
        }
        assert!(memory.read_many(&mut []).is_empty());
    }

    #[test]
    fn finds_the_executable_mapping_by_device_and_inode() {
        let maps = "\
555555554000-555555556000 r--p 00000000 fd:01 123 /usr/bin/other
7f0000000000-7f0000001000 r-xp 00001000 fd:01 456 /srv/my app
7f0000001000-7f0000002000 r--p 00000000 fd:01 456 /srv/my app
7f0000003000-7f0000004000 r--p 00000000 fd:02 456 /elsewhere
7ffff7ff9000-7ffff7ffd000 r--p 00000000 00:00 0 [vvar]
";
        let file = |major, minor, inode| MappedFile {
            major,
            minor,
            inode,
        };
        assert_eq!(
            parse_maps_start(maps, file(0xfd, 1, 456)),
            Some(0x7f0000001000)
        );
        assert_eq!(
            parse_maps_start(maps, file(0xfd, 2, 456)),
            Some(0x7f0000003000)
        );
        assert_eq!(
            parse_maps_start(maps, file(0xfd, 1, 123)),
            Some(0x555555554000)
        );
        assert_eq!(parse_maps_start(maps, file(0xfd, 1, 999)), None);
    }
}
