//! Reading a target process's memory from outside, without stopping it.
//!
//! Reads go through `/proc/PID/mem` (root or CAP_SYS_PTRACE). They are racy by nature: the
//! target keeps running, so callers must tolerate values that change under them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot open the memory of PID {pid}: {source}")]
    Open { pid: u32, source: io::Error },
    #[error("cannot read {len} bytes at {address:#x} in PID {pid}: {source}")]
    Read {
        pid: u32,
        address: u64,
        len: usize,
        source: io::Error,
    },
    #[error("cannot read /proc/{pid}/maps: {source}")]
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
}

impl ProcessMemory {
    pub fn open(pid: u32) -> Result<Self, MemoryError> {
        let mem = File::open(format!("/proc/{pid}/mem"))
            .map_err(|source| MemoryError::Open { pid, source })?;
        Ok(Self { pid, mem })
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

/// The start address of the first mapping of `file` at file offset 0.
fn parse_maps_start(maps: &str, file: MappedFile) -> Option<u64> {
    maps.lines().find_map(|line| {
        // "start-end perms offset major:minor inode   path"
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let _perms = fields.next()?;
        let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
        let (major, minor) = fields.next()?.split_once(':')?;
        let inode: u64 = fields.next()?.parse().ok()?;
        let mapped = MappedFile {
            major: u32::from_str_radix(major, 16).ok()?,
            minor: u32::from_str_radix(minor, 16).ok()?,
            inode,
        };
        (offset == 0 && mapped == file)
            .then(|| u64::from_str_radix(range.split('-').next()?, 16).ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
