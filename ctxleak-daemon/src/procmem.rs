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
    Read { pid: u32, address: u64, len: usize, source: io::Error },
    #[error("cannot read /proc/{pid}/maps: {source}")]
    Maps { pid: u32, source: io::Error },
    #[error("PID {pid} has no mapping of {exe} at file offset 0")]
    NoMapping { pid: u32, exe: String },
}

impl MemoryError {
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Self::Open { source, .. } | Self::Read { source, .. } | Self::Maps { source, .. } => Some(source),
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
        let mem = File::open(format!("/proc/{pid}/mem")).map_err(|source| MemoryError::Open { pid, source })?;
        Ok(Self { pid, mem })
    }

    pub fn read_exact(&self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.mem.read_exact_at(buf, address).map_err(|source| MemoryError::Read {
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

/// Runtime address minus link-time address for the executable mapped from `exe`: the start
/// of its mapping at file offset 0 minus `first_segment_address` (page-aligned). Zero for
/// non-PIE executables, which callers can skip asking for.
pub fn load_bias(pid: u32, exe: &Path, first_segment_address: u64) -> Result<u64, MemoryError> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|source| MemoryError::Maps { pid, source })?;
    let exe_str = exe.to_string_lossy();
    let start = parse_maps_start(&maps, &exe_str)
        .ok_or_else(|| MemoryError::NoMapping { pid, exe: exe_str.into_owned() })?;
    Ok(start.wrapping_sub(first_segment_address & !0xfff))
}

/// The start address of the first mapping of `path` at file offset 0.
fn parse_maps_start(maps: &str, path: &str) -> Option<u64> {
    maps.lines().find_map(|line| {
        // "start-end perms offset dev inode   path"
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let _perms = fields.next()?;
        let offset = fields.next()?;
        let _dev = fields.next()?;
        let _inode = fields.next()?;
        let mapped = fields.collect::<Vec<_>>().join(" ");
        if mapped != path || u64::from_str_radix(offset, 16).ok()? != 0 {
            return None;
        }
        u64::from_str_radix(range.split('-').next()?, 16).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_executable_mapping() {
        let maps = "\
555555554000-555555556000 r--p 00000000 fd:01 123 /usr/bin/other
7f0000000000-7f0000001000 r-xp 00001000 fd:01 456 /srv/my app
7f0000001000-7f0000002000 r--p 00000000 fd:01 456 /srv/my app
7ffff7ff9000-7ffff7ffd000 r--p 00000000 00:00 0 [vvar]
";
        assert_eq!(parse_maps_start(maps, "/srv/my app"), Some(0x7f0000001000));
        assert_eq!(parse_maps_start(maps, "/usr/bin/other"), Some(0x555555554000));
        assert_eq!(parse_maps_start(maps, "/nope"), None);
    }
}
