//! Opening an executable to read it: only a regular file is opened, its headers are read
//! with every read bounded before anything else, and the whole file only when they say it is
//! a Go executable of a sane size; so `/dev/zero`, `/dev/urandom`, a FIFO, a directory or a
//! huge sparse file given in its place is refused at once rather than read without end.
//! Every read of a binary goes through [`ExecutableFile`]: `ctxleak inspect`, attaching, and
//! the daemon's discovery.

use std::fs::{File, Metadata};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use object::read::elf::FileHeader;
use object::read::{ReadCache, ReadRef};

use super::GoBinaryError;

/// The largest executable ctxleak reads: 1 GiB. The largest Go programs in common use are
/// 100–300 MB with their DWARF (which the Go linker compresses), and a parse holds the whole
/// file in memory once, so this is a few times the largest real one while still bounding
/// what a wrong or hostile file can cost.
pub const MAX_EXECUTABLE_BYTES: u64 = 1 << 30;

/// The largest single read of [`ExecutableFile::check_go`]: the section header table is
/// its only large one, and 64 KiB holds 1024 section headers (Go executables have about 40).
/// Without a bound, a file's header can claim 2^32 sections, and a sparse file back it.
const MAX_HEADER_READ: u64 = 64 << 10;

/// A regular file, open for reading.
#[derive(Debug)]
pub struct ExecutableFile {
    file: File,
    len: u64,
    /// Names the file in errors.
    display: PathBuf,
}

impl ExecutableFile {
    /// Opens `path` (`display` names it in errors) if it is a regular file. Its type is checked before it is opened, since opening a
    /// device can do something (a tape rewinds, a watchdog starts) and opening a FIFO waits
    /// for a writer; and again on what was opened, in case the path changed in between.
    pub fn open(path: &Path, display: &Path) -> Result<Self, GoBinaryError> {
        let read_error = |source: io::Error| GoBinaryError::Read {
            path: display.to_owned(),
            source,
        };
        check_regular(&std::fs::metadata(path).map_err(read_error)?, display)?;
        let file = File::options()
            .read(true)
            // A FIFO swapped in after the check must not block the open; no effect on files.
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(read_error)?;
        let metadata = file.metadata().map_err(read_error)?;
        check_regular(&metadata, display)?;
        let len = metadata.len();
        Ok(Self {
            file,
            len,
            display: display.to_owned(),
        })
    }

    /// Checks that this is a Go executable from its ELF header, section headers and section
    /// names alone, never the rest of the file (cheap enough for every exec on a host):
    /// [`GoBinaryError::NotElf`] for anything that is not an ELF file with section headers
    /// (a script, an empty, truncated or unreadable file), [`GoBinaryError::NotGo`] for an
    /// ELF file without the `.go.buildinfo` section the Go linker writes into every
    /// executable, stripped ones included. Memory stays within a few MB whatever the file.
    pub fn check_go(&self) -> Result<(), GoBinaryError> {
        // Every read is within the file's size (the cache checks it against the length) and
        // MAX_HEADER_READ; read errors surface as parse errors: a file that cannot be read
        // through is not one to attach to either.
        let cache = ReadCache::new(&self.file);
        let data = Headers(&cache);
        let has_buildinfo = match object::FileKind::parse(data) {
            Ok(object::FileKind::Elf64) => {
                has_section::<object::elf::FileHeader64<object::Endianness>>(data, b".go.buildinfo")
            }
            Ok(object::FileKind::Elf32) => {
                has_section::<object::elf::FileHeader32<object::Endianness>>(data, b".go.buildinfo")
            }
            // No section headers parse as an empty table: not Go.
            _ => {
                return Err(GoBinaryError::NotElf {
                    path: self.display.clone(),
                });
            }
        };
        if has_buildinfo {
            Ok(())
        } else {
            Err(GoBinaryError::NotGo {
                path: self.display.clone(),
            })
        }
    }

    /// The whole file, as long as it was when opened (a file that grew since is read no
    /// further; one that shrank is an error), if that is at most [`MAX_EXECUTABLE_BYTES`].
    pub fn read(&self) -> Result<Vec<u8>, GoBinaryError> {
        if self.len > MAX_EXECUTABLE_BYTES {
            return Err(GoBinaryError::TooLarge {
                path: self.display.clone(),
                size: self.len,
            });
        }
        let read_error = |source: io::Error| GoBinaryError::Read {
            path: self.display.clone(),
            source,
        };
        // At most MAX_EXECUTABLE_BYTES, which fits a usize on 64-bit Linux.
        let len = usize::try_from(self.len).map_err(|_| {
            read_error(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "larger than this machine's address space",
            ))
        })?;
        let mut data = Vec::new();
        data.try_reserve_exact(len)
            .map_err(|error| read_error(io::Error::new(io::ErrorKind::OutOfMemory, error)))?;
        data.resize(len, 0);
        self.file.read_exact_at(&mut data, 0).map_err(read_error)?;
        Ok(data)
    }
}

/// Refuses anything but a regular file, naming what it is.
fn check_regular(metadata: &Metadata, display: &Path) -> Result<(), GoBinaryError> {
    let kind = metadata.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(GoBinaryError::NotAFile {
        path: display.to_owned(),
        what,
    })
}

/// A file's cache that refuses any single read over [`MAX_HEADER_READ`].
#[derive(Clone, Copy)]
struct Headers<'a, 'f>(&'a ReadCache<&'f File>);

impl<'a> ReadRef<'a> for Headers<'a, '_> {
    fn len(self) -> Result<u64, ()> {
        self.0.len()
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size > MAX_HEADER_READ {
            return Err(());
        }
        self.0.read_bytes_at(offset, size)
    }

    /// Strings: the cache reads at most 4 KiB of each.
    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        self.0.read_bytes_at_until(range, delimiter)
    }
}

fn has_section<'a, Elf: FileHeader<Endian = object::Endianness>>(
    data: Headers<'a, '_>,
    name: &[u8],
) -> bool {
    let Ok(header) = Elf::parse(data) else {
        return false;
    };
    let Ok(endian) = header.endian() else {
        return false;
    };
    header
        .sections(endian, data)
        .is_ok_and(|sections| sections.section_by_name(endian, name).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(path: &Path) -> String {
        let error = ExecutableFile::open(path, path)
            .and_then(|file| file.check_go())
            .expect_err("refused");
        error.to_string()
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        for (path, what) in [
            ("/dev/zero", "a character device"),
            ("/dev/urandom", "a character device"),
            ("/", "a directory"),
        ] {
            assert_eq!(
                refusal(Path::new(path)),
                format!("{path} is {what}, not an executable file: give the path of a Go program")
            );
        }
        let dir = std::env::temp_dir().join(format!("ctxleak-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates the file.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // No writer: opening it for reading would block without the type check.
        assert!(refusal(&fifo).contains("is a FIFO (named pipe), not an executable file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file of `len` bytes, sparse after `head`.
    fn sparse(path: &Path, head: &[u8], len: u64) {
        std::fs::write(path, head).unwrap();
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    #[test]
    fn huge_sparse_files_are_not_read() {
        let dir = std::env::temp_dir().join(format!("ctxleak-huge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let huge = dir.join("huge");
        // Zeros: its first bytes say it is not ELF.
        sparse(&huge, b"", 20 << 30);
        assert!(
            refusal(&huge)
                .ends_with("is not an ELF executable: ctxleak watches Go programs on Linux")
        );
        // A Go executable's headers followed by 20 GiB: too large to read.
        let go = std::env::var_os("CTXLEAK_FIXTURES")
            .and_then(|fixtures| std::fs::read_dir(fixtures).ok())
            .into_iter()
            .flatten()
            .filter_map(|version| Some(version.ok()?.path().join("phases")))
            .find(|path| path.exists());
        if let Some(go) = go {
            sparse(&huge, &std::fs::read(&go).unwrap(), 20 << 30);
            let file = ExecutableFile::open(&huge, &huge).unwrap();
            file.check_go().unwrap();
            let error = file.read().unwrap_err().to_string();
            assert!(
                error.ends_with("is 20 GiB, more than the 1 GiB ctxleak reads of an executable: give the path of a Go program"),
                "{error}"
            );
        } else {
            eprintln!("skipped the Go executable: CTXLEAK_FIXTURES is not set");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Bytes this thread has read from files so far (each test runs on its own thread).
    fn bytes_read_by_this_thread() -> u64 {
        std::fs::read_to_string("/proc/thread-self/io")
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix("rchar: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn a_header_claiming_millions_of_sections_is_not_read_through() {
        let dir = std::env::temp_dir().join(format!("ctxleak-sections-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("claims");
        // This test binary's ELF header, with extended numbering (e_shnum 0, the count in
        // section 0's sh_size) claiming 2^24 section headers: 1 GiB, over a sparse file.
        let mut header = std::fs::read("/proc/self/exe").unwrap()[..64].to_vec();
        header[0x28..0x30].copy_from_slice(&64u64.to_le_bytes()); // e_shoff
        header[0x3c..0x3e].copy_from_slice(&0u16.to_le_bytes()); // e_shnum
        let mut section_0 = [0u8; 64];
        section_0[0x20..0x28].copy_from_slice(&(1u64 << 24).to_le_bytes()); // sh_size
        header.extend_from_slice(&section_0);
        sparse(&path, &header, 2 << 30);
        let before = bytes_read_by_this_thread();
        let file = ExecutableFile::open(&path, &path).unwrap();
        assert!(matches!(file.check_go(), Err(GoBinaryError::NotGo { .. })));
        let read = bytes_read_by_this_thread() - before;
        assert!(read < 1 << 20, "read {read} bytes of its headers");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_and_text_files_are_not_elf() {
        let dir = std::env::temp_dir().join(format!("ctxleak-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in [("empty", ""), ("text", "hello\n")] {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            assert!(
                refusal(&path).contains("is not an ELF executable"),
                "{name}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_exactly_the_file() {
        let path = Path::new("/proc/self/exe");
        let file = ExecutableFile::open(path, path).unwrap();
        assert_eq!(file.read().unwrap(), std::fs::read(path).unwrap());
        // An ELF file, but not Go.
        assert!(matches!(file.check_go(), Err(GoBinaryError::NotGo { .. })));
    }
}
