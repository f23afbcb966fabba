//! The Go version stamped into `.go.buildinfo`.
//!
//! Layout (Go 1.18+, the only one ctxleak supports): a 32-byte header starting with the magic
//! `"\xff Go buildinf:"`, the pointer size at byte 14 and flags at byte 15; with flag bit 1
//! ("inline strings") the version follows as a uvarint length and its bytes.

use std::fmt;

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
const FLAG_INLINE_STRINGS: u8 = 0x2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildInfoError {
    #[error("the .go.buildinfo section does not start with the Go build info magic")]
    BadMagic,
    #[error("the .go.buildinfo section uses the pre-Go 1.18 layout")]
    OldLayout,
    #[error("the .go.buildinfo section is truncated")]
    Truncated,
    #[error("the Go version in .go.buildinfo is not UTF-8")]
    NotUtf8,
}

/// A Go release as `go<major>.<minor>[.<patch>]`; development builds keep their raw string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoVersion {
    pub raw: String,
    /// (major, minor, patch) when `raw` is a release or release candidate.
    pub release: Option<(u32, u32, u32)>,
}

impl GoVersion {
    pub fn parse(raw: &str) -> Self {
        let release = raw.strip_prefix("go").and_then(|rest| {
            // "1.22.10", "1.23rc1", "1.21.13 X:nocoverageredesign": keep the leading numbers.
            let numeric: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let mut parts = numeric.split('.').map(|part| part.parse::<u32>().ok());
            let major = parts.next()??;
            let minor = parts.next()??;
            let patch = parts.next().flatten().unwrap_or(0);
            Some((major, minor, patch))
        });
        Self {
            raw: raw.to_owned(),
            release,
        }
    }

    /// Whether this release is at least `major.minor`. Development builds (`devel ...`) are
    /// assumed recent: their layouts come from DWARF anyway.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.release
            .is_none_or(|(ma, mi, _)| (ma, mi) >= (major, minor))
    }

    /// The minor release, `go1.24` for any `go1.24.x` (and its release candidates): struct
    /// layouts only change between minor releases. `None` for development builds.
    pub fn minor_release(&self) -> Option<String> {
        self.release
            .map(|(major, minor, _)| format!("go{major}.{minor}"))
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Reads the Go version from the contents of the `.go.buildinfo` section.
pub fn parse_version(section: &[u8]) -> Result<GoVersion, BuildInfoError> {
    if section.len() < HEADER_LEN {
        return Err(
            if section.starts_with(MAGIC) || MAGIC.starts_with(section) {
                BuildInfoError::Truncated
            } else {
                BuildInfoError::BadMagic
            },
        );
    }
    if !section.starts_with(MAGIC) {
        return Err(BuildInfoError::BadMagic);
    }
    if section[15] & FLAG_INLINE_STRINGS == 0 {
        return Err(BuildInfoError::OldLayout);
    }
    let (len, used) = read_uvarint(&section[HEADER_LEN..]).ok_or(BuildInfoError::Truncated)?;
    let start = HEADER_LEN + used;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len))
        .filter(|&end| end <= section.len())
        .ok_or(BuildInfoError::Truncated)?;
    let raw = std::str::from_utf8(&section[start..end]).map_err(|_| BuildInfoError::NotUtf8)?;
    Ok(GoVersion::parse(raw))
}

/// The module paths the binary was built from (the main module's `mod` line and every `dep`),
/// from the module information after the version string; empty when absent (binaries built
/// outside module mode, or with `-buildvcs`-less tooling that left it out).
pub fn module_paths(section: &[u8]) -> Vec<String> {
    let Some(modinfo) = second_string(section) else {
        return Vec::new();
    };
    // The runtime brackets it with 16-byte sentinels.
    let text = modinfo
        .get(16..modinfo.len().saturating_sub(16))
        .unwrap_or_default();
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            match fields.next() {
                Some("mod" | "dep") => fields.next().map(str::to_owned),
                _ => None,
            }
        })
        .collect()
}

fn second_string(section: &[u8]) -> Option<&[u8]> {
    if section.len() < HEADER_LEN || section[15] & FLAG_INLINE_STRINGS == 0 {
        return None;
    }
    let mut at = HEADER_LEN;
    let mut next = || {
        let (len, used) = read_uvarint(section.get(at..)?)?;
        let start = at + used;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        at = end;
        section.get(start..end)
    };
    next()?;
    next()
}

/// Go's `encoding/binary.Uvarint`: returns the value and the bytes it used.
fn read_uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(version: &str, flags: u8) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.push(8);
        bytes.push(flags);
        bytes.resize(HEADER_LEN, 0);
        bytes.push(version.len() as u8);
        bytes.extend_from_slice(version.as_bytes());
        bytes.extend_from_slice(b"\x00modinfo...");
        bytes
    }

    #[test]
    fn reads_inline_version() {
        let v = parse_version(&section("go1.22.10", 2)).unwrap();
        assert_eq!(v.raw, "go1.22.10");
        assert_eq!(v.release, Some((1, 22, 10)));
        assert!(v.at_least(1, 21));
        assert!(!v.at_least(1, 23));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse_version(b"hello"), Err(BuildInfoError::BadMagic));
        assert_eq!(
            parse_version(&section("go1.17", 0)),
            Err(BuildInfoError::OldLayout)
        );
        let mut cut = section("go1.25.5", 2);
        cut.truncate(HEADER_LEN + 4);
        assert_eq!(parse_version(&cut), Err(BuildInfoError::Truncated));
        assert_eq!(parse_version(&MAGIC[..8]), Err(BuildInfoError::Truncated));
    }

    #[test]
    fn parses_version_shapes() {
        assert_eq!(GoVersion::parse("go1.20").release, Some((1, 20, 0)));
        assert_eq!(GoVersion::parse("go1.23rc1").release, Some((1, 23, 0)));
        assert_eq!(
            GoVersion::parse("go1.21.13 X:boringcrypto").release,
            Some((1, 21, 13))
        );
        let devel = GoVersion::parse("devel go1.28-abcdef");
        assert_eq!(devel.release, None);
        assert!(devel.at_least(1, 21));
        assert!(!GoVersion::parse("go1.20.14").at_least(1, 21));
        assert_eq!(
            GoVersion::parse("go1.24.3").minor_release().as_deref(),
            Some("go1.24")
        );
        assert_eq!(devel.minor_release(), None);
    }
}
