//! Struct layouts of the Go runtime, read from the binary's DWARF.
//!
//! Offsets in `runtime.g` moved between Go releases (see `shared/go-runtime.md`), so they are
//! read from each binary rather than compiled in. So are the few fields of a goroutine's
//! channel waits ([`WaitLayout`]: `g.waiting`, `sudog.c`, `sudog.waitlink`).

use std::borrow::Cow;

use ctxleak_common::GoOffsets;
use gimli::{AttributeValue, EndianSlice, RunTimeEndian};
use object::{Object as _, ObjectSection as _};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("the binary has no DWARF debug info")]
    NoDwarf,
    #[error("cannot read DWARF")]
    Dwarf(#[from] gimli::Error),
    #[error("cannot decompress DWARF section {section}")]
    Section {
        section: &'static str,
        source: object::Error,
    },
    #[error("DWARF section {section} claims {size} bytes decompressed, more than ctxleak accepts")]
    SectionTooLarge { section: &'static str, size: u64 },
    #[error("DWARF gives {strukt}.{member} an offset outside the struct")]
    BadOffset {
        strukt: &'static str,
        member: &'static str,
    },
    #[error(
        "runtime.g.{member} is not within the 32 bytes from parentGoid, where ctxleak's creation probe reads it in one go: this Go version's layout is not supported"
    )]
    ApartFromParentGoid { member: &'static str },
    #[error("DWARF has no struct {0}")]
    MissingStruct(&'static str),
    #[error("DWARF struct {strukt} has no member {member}")]
    MissingMember {
        strukt: &'static str,
        member: &'static str,
    },
}

/// Where the fields ctxleak reads live in `runtime.g`. Serialized (with these names) in the
/// offset table for stripped binaries, `data/go-offsets.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GLayout {
    pub size: u64,
    pub atomicstatus: u64,
    pub goid: u64,
    pub parent_goid: u64,
    pub gopc: u64,
    pub startpc: u64,
    /// `g.stack.hi`: the top of the goroutine's stack.
    pub stack_hi: u64,
    /// `g.sched.sp`, `.pc`, `.bp`: where a goroutine that is not running resumes; the start
    /// of its stack walk. (`gobuf.bp` moved from +48 to +40 in Go 1.25.)
    pub sched_sp: u64,
    pub sched_pc: u64,
    pub sched_bp: u64,
    /// `g.waitreason`, a `runtime.waitReason` (u8): an index into `runtime.waitReasonStrings`.
    pub waitreason: u64,
    /// `g.trackingSeq` (u8): the runtime adds one each time the goroutine stops running
    /// (`casgstatus`), so a census can tell a goroutine that has not run since the last one
    /// and reuse its stack instead of reading it again.
    pub tracking_seq: u64,
}

impl GLayout {
    /// The offsets the eBPF programs need.
    pub fn probe_offsets(&self) -> GoOffsets {
        // Every field sits within sizeof(runtime.g), a few hundred bytes: the casts are exact.
        GoOffsets {
            g_goid: self.goid as u32,
            g_parent_goid: self.parent_goid as u32,
            g_gopc: self.gopc as u32,
            g_startpc: self.startpc as u32,
        }
    }

    /// The largest `runtime.g` ctxleak accepts (it is under 500 bytes in Go 1.21–1.27): the
    /// census reads this much per goroutine.
    pub const MAX_SIZE: u64 = 4096;

    /// Every field must lie inside a plausible struct (each is read as up to 8 bytes).
    pub fn check(&self) -> Result<(), LayoutError> {
        let bad = |member| LayoutError::BadOffset {
            strukt: "runtime.g",
            member,
        };
        if self.size == 0 || self.size > Self::MAX_SIZE {
            return Err(bad("(size)"));
        }
        if let Some(&(member, _)) = self.fields()[1..]
            .iter()
            .find(|(_, offset)| offset.saturating_add(8) > self.size)
        {
            return Err(bad(member));
        }
        // The creation probe reads parentGoid, gopc and startpc as one [u64; 4] (they are
        // adjacent in Go 1.21-1.27).
        for (member, offset) in [("gopc", self.gopc), ("startpc", self.startpc)] {
            let apart = offset
                .checked_sub(self.parent_goid)
                .is_none_or(|delta| delta % 8 != 0 || delta >= 32);
            if apart {
                return Err(LayoutError::ApartFromParentGoid { member });
            }
        }
        Ok(())
    }

    /// Every field with its Go name (`(size)` first), for messages and comparisons.
    pub fn fields(&self) -> [(&'static str, u64); 12] {
        [
            ("(size)", self.size),
            ("atomicstatus", self.atomicstatus),
            ("goid", self.goid),
            ("parentGoid", self.parent_goid),
            ("gopc", self.gopc),
            ("startpc", self.startpc),
            ("stack.hi", self.stack_hi),
            ("sched.sp", self.sched_sp),
            ("sched.pc", self.sched_pc),
            ("sched.bp", self.sched_bp),
            ("waitreason", self.waitreason),
            ("trackingSeq", self.tracking_seq),
        ]
    }

    /// The fields where `other` differs, as `goid +152, not +160` (this layout's value first).
    pub fn differences(&self, other: &GLayout) -> Vec<String> {
        self.fields()
            .iter()
            .zip(other.fields())
            .filter(|((_, mine), (_, theirs))| mine != theirs)
            .map(|((name, mine), (_, theirs))| format!("{name} +{mine}, not +{theirs}"))
            .collect()
    }

    /// Bytes to read from a g to see every field above.
    pub fn read_len(&self) -> u64 {
        [
            self.atomicstatus + 4,
            self.goid,
            self.parent_goid,
            self.gopc,
            self.startpc,
            self.stack_hi,
            self.sched_sp,
            self.sched_pc,
            self.sched_bp,
            self.waitreason,
            self.tracking_seq,
        ]
        .into_iter()
        .map(|end| end.saturating_add(8))
        .max()
        .unwrap_or(self.size)
        .min(self.size.max(8))
    }
}

/// Where a blocked goroutine's waits are: since when the runtime has seen it blocked
/// (`g.waitsince`), and its channel waits (Go 1.21-1.27: `g.waiting` +312 or +320,
/// `sudog.c` +80 up to 1.25, `sudog.waitlink` +64 or +72). A goroutine parked
/// in a channel receive or a `select` has `g.waiting` pointing at the first `runtime.sudog`
/// of its operation (`chanrecv` sets one, `selectgo` chains one per case through
/// `waitlink`), and each sudog's `c` is the `*hchan` it waits on. Serialized (with these
/// names) in the offset table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitLayout {
    /// `g.waiting` (`*sudog`).
    pub g_waiting: u64,
    /// `g.waitsince` (i64, `nanotime()`): the start of the mark termination of the GC cycle
    /// before the one whose stack scan first saw the goroutine blocked (0 until a scan does
    /// with a non-zero start; cleared whenever it runs). +168 or +176, next to `waitreason`,
    /// so a census reads it with the words it reads anyway. See `groups::runtime_bound`.
    pub g_waitsince: u64,
    /// `sudog.c` (`*hchan`); from Go 1.26 its `vu`, the channel's address as an integer,
    /// +96 (`c` is a `maybeTraceableChan` at +88 whose `vp` the runtime may clear).
    pub sudog_c: u64,
    /// `sudog.waitlink` (`*sudog`): the next sudog of the same `select`.
    pub sudog_waitlink: u64,
}

impl WaitLayout {
    /// The largest `runtime.sudog` offset accepted (the struct is under 100 bytes in Go
    /// 1.21-1.27).
    pub const MAX_SUDOG_OFFSET: u64 = 512;

    /// Every field must lie inside a plausible struct: `g.waiting` inside a g of `g_size`
    /// bytes, the sudog's fields within [`WaitLayout::MAX_SUDOG_OFFSET`], each read as 8
    /// bytes, none overlapping another.
    pub fn check(&self, g_size: u64) -> Result<(), LayoutError> {
        for (member, offset) in [("waiting", self.g_waiting), ("waitsince", self.g_waitsince)] {
            if offset.saturating_add(8) > g_size {
                return Err(LayoutError::BadOffset {
                    strukt: "runtime.g",
                    member,
                });
            }
        }
        if self.g_waiting.abs_diff(self.g_waitsince) < 8 {
            return Err(LayoutError::BadOffset {
                strukt: "runtime.g",
                member: "waitsince",
            });
        }
        for (member, offset) in [("c", self.sudog_c), ("waitlink", self.sudog_waitlink)] {
            if offset.saturating_add(8) > Self::MAX_SUDOG_OFFSET || offset % 8 != 0 {
                return Err(LayoutError::BadOffset {
                    strukt: "runtime.sudog",
                    member,
                });
            }
        }
        if self.sudog_c.abs_diff(self.sudog_waitlink) < 8 {
            return Err(LayoutError::BadOffset {
                strukt: "runtime.sudog",
                member: "c",
            });
        }
        Ok(())
    }

    /// The fields where `other` differs, as `sudog.c +80, not +88` (this layout's value first).
    pub fn differences(&self, other: &WaitLayout) -> Vec<String> {
        let fields = |l: &WaitLayout| {
            [
                ("g.waiting", l.g_waiting),
                ("g.waitsince", l.g_waitsince),
                ("sudog.c", l.sudog_c),
                ("sudog.waitlink", l.sudog_waitlink),
            ]
        };
        fields(self)
            .iter()
            .zip(fields(other))
            .filter(|((_, mine), (_, theirs))| mine != theirs)
            .map(|((name, mine), (_, theirs))| format!("{name} +{mine}, not +{theirs}"))
            .collect()
    }

    /// The first sudog byte a read of `c` and `waitlink` needs, and how many bytes.
    pub fn sudog_span(&self) -> (u64, usize) {
        let first = self.sudog_c.min(self.sudog_waitlink);
        let end = self.sudog_c.max(self.sudog_waitlink) + 8;
        (first, usize::try_from(end - first).unwrap_or(16))
    }
}

/// Where the state of a channel is in its `runtime.hchan`, and the link of its queues of
/// parked goroutines (Go 1.21-1.27: `qcount` +0, `dataqsiz` +8, `closed` +28, `sendx`,
/// `recvx`, `recvq`, `sendq` +40, +48, +56, +72 up to 1.22, 8 further from 1.23, where
/// `timer` came in; `sudog.next` +8). Serialized (with these names) in the offset table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChanLayout {
    /// `hchan.qcount`: values in the buffer.
    pub qcount: u64,
    /// `hchan.dataqsiz`: the buffer's size (0: unbuffered).
    pub dataqsiz: u64,
    /// `hchan.closed` (u32).
    pub closed: u64,
    /// `hchan.sendx`, `hchan.recvx`: where the next send and receive go in the buffer.
    pub sendx: u64,
    pub recvx: u64,
    /// `hchan.recvq.first`, `hchan.sendq.first`: the first `sudog` of the goroutines parked
    /// receiving and sending.
    pub recvq: u64,
    pub sendq: u64,
    /// `sudog.next`: the next sudog of the same queue.
    pub sudog_next: u64,
}

impl ChanLayout {
    /// The largest `runtime.hchan` offset accepted (the struct is about 100 bytes).
    pub const MAX_OFFSET: u64 = 256;

    /// Every field inside a plausible struct.
    pub fn check(&self) -> Result<(), LayoutError> {
        for (strukt, member, offset) in [
            ("runtime.hchan", "qcount", self.qcount),
            ("runtime.hchan", "dataqsiz", self.dataqsiz),
            ("runtime.hchan", "closed", self.closed),
            ("runtime.hchan", "sendx", self.sendx),
            ("runtime.hchan", "recvx", self.recvx),
            ("runtime.hchan", "recvq", self.recvq),
            ("runtime.hchan", "sendq", self.sendq),
            ("runtime.sudog", "next", self.sudog_next),
        ] {
            if offset.saturating_add(8) > Self::MAX_OFFSET {
                return Err(LayoutError::BadOffset { strukt, member });
            }
        }
        Ok(())
    }

    /// How many bytes of an hchan a read of every field above needs (from its start).
    pub fn read_len(&self) -> usize {
        [
            self.qcount,
            self.dataqsiz,
            self.closed,
            self.sendx,
            self.recvx,
            self.recvq,
            self.sendq,
        ]
        .into_iter()
        .max()
        .map_or(8, |last| {
            usize::try_from(last.min(Self::MAX_OFFSET) + 8).unwrap_or(8)
        })
    }
}

pub fn has_dwarf(file: &object::File<'_>) -> bool {
    file.section_by_name(".debug_info").is_some() || file.section_by_name(".zdebug_info").is_some()
}

/// The `runtime.g` layout from DWARF, and the [`WaitLayout`] and [`ChanLayout`] (or why DWARF
/// does not give them), from one walk over the type entries. `traceable_chan`: the binary is Go 1.26 or newer,
/// whose `sudog.c` is a `runtime.maybeTraceableChan`, a `maybeTraceablePtr` whose `vp`
/// (+0) the runtime clears to hide the channel from the GC while `vu` (+8), the address as
/// an integer, stays the truth: [`WaitLayout::sudog_c`] is then where `vu` is.
pub fn read_g_layout(
    file: &object::File<'_>,
    traceable_chan: bool,
) -> Result<DwarfLayouts, LayoutError> {
    if !has_dwarf(file) {
        return Err(LayoutError::NoDwarf);
    }
    let sections = gimli::DwarfSections::load(|id| load_section(file, id.name()))?;
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let dwarf = sections.borrow(|section| EndianSlice::new(section, endian));
    let names: &[&'static str] = if traceable_chan {
        &[
            "runtime.g",
            "runtime.gobuf",
            "runtime.stack",
            "runtime.sudog",
            "runtime.hchan",
            "runtime.waitq",
            "runtime.maybeTraceableChan",
            "runtime.maybeTraceablePtr",
        ]
    } else {
        &[
            "runtime.g",
            "runtime.gobuf",
            "runtime.stack",
            "runtime.sudog",
            "runtime.hchan",
            "runtime.waitq",
        ]
    };
    let structs = struct_members(&dwarf, names)?;
    let member = |strukt: &'static str, name: &'static str| {
        structs
            .iter()
            .find(|(found, _)| *found == strukt)
            .ok_or(LayoutError::MissingStruct(strukt))?
            .1
            .fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|&(_, offset)| offset)
            .ok_or(LayoutError::MissingMember {
                strukt,
                member: name,
            })
    };
    let g = |name| member("runtime.g", name);
    // A field of a struct embedded in g: its offset plus the field's, checked (the numbers
    // come from the file).
    let nested = |outer: u64, strukt: &'static str, name: &'static str| {
        outer
            .checked_add(member(strukt, name)?)
            .ok_or(LayoutError::BadOffset {
                strukt,
                member: name,
            })
    };
    let sched = g("sched")?;
    let layout = GLayout {
        size: structs
            .iter()
            .find(|(name, _)| *name == "runtime.g")
            .map_or(0, |(_, members)| members.size),
        atomicstatus: g("atomicstatus")?,
        goid: g("goid")?,
        parent_goid: g("parentGoid")?,
        gopc: g("gopc")?,
        startpc: g("startpc")?,
        stack_hi: nested(g("stack")?, "runtime.stack", "hi")?,
        sched_sp: nested(sched, "runtime.gobuf", "sp")?,
        sched_pc: nested(sched, "runtime.gobuf", "pc")?,
        sched_bp: nested(sched, "runtime.gobuf", "bp")?,
        waitreason: g("waitreason")?,
        tracking_seq: g("trackingSeq")?,
    };
    layout.check()?;
    let waits = (|| {
        let mut sudog_c = member("runtime.sudog", "c")?;
        if traceable_chan {
            sudog_c = nested(
                nested(sudog_c, "runtime.maybeTraceableChan", "maybeTraceablePtr")?,
                "runtime.maybeTraceablePtr",
                "vu",
            )?;
        }
        let waits = WaitLayout {
            g_waiting: g("waiting")?,
            g_waitsince: g("waitsince")?,
            sudog_c,
            sudog_waitlink: member("runtime.sudog", "waitlink")?,
        };
        waits.check(layout.size)?;
        Ok(waits)
    })();
    let chans = (|| {
        let hchan = |name| member("runtime.hchan", name);
        let chans = ChanLayout {
            qcount: hchan("qcount")?,
            dataqsiz: hchan("dataqsiz")?,
            closed: hchan("closed")?,
            sendx: hchan("sendx")?,
            recvx: hchan("recvx")?,
            recvq: nested(hchan("recvq")?, "runtime.waitq", "first")?,
            sendq: nested(hchan("sendq")?, "runtime.waitq", "first")?,
            sudog_next: member("runtime.sudog", "next")?,
        };
        chans.check()?;
        Ok(chans)
    })();
    Ok(DwarfLayouts {
        g: layout,
        waits,
        chans,
    })
}

/// What [`read_g_layout`] reads: `runtime.g`'s layout, and the wait and channel layouts or
/// why DWARF does not give them.
pub struct DwarfLayouts {
    pub g: GLayout,
    pub waits: Result<WaitLayout, LayoutError>,
    pub chans: Result<ChanLayout, LayoutError>,
}

/// Largest decompressed DWARF section accepted; Go binaries of hundreds of MB have DWARF
/// sections of tens of MB.
const MAX_DWARF_SECTION: u64 = 1 << 30;

/// Sections a walk over type DIEs reads. Go compresses DWARF, so decompressing only these
/// (not the location and range tables; `.debug_line` is read for unit headers) saves
/// attach time.
const TYPE_WALK_SECTIONS: &[&str] = &[
    ".debug_info",
    ".debug_abbrev",
    ".debug_str",
    ".debug_str_offsets",
    ".debug_line",
    ".debug_line_str",
];

fn load_section<'data>(
    file: &object::File<'data>,
    name: &'static str,
) -> Result<Cow<'data, [u8]>, LayoutError> {
    if !TYPE_WALK_SECTIONS.contains(&name) {
        return Ok(Cow::Borrowed(&[]));
    }
    let Some(section) = file.section_by_name(name) else {
        return Ok(Cow::Borrowed(&[]));
    };
    // The decompressed size comes from the file: bound it before allocating, or a few bytes
    // of hostile input could claim terabytes (or a zlib bomb fill gigabytes).
    let compressed = section
        .compressed_data()
        .map_err(|source| LayoutError::Section {
            section: name,
            source,
        })?;
    if compressed.uncompressed_size > MAX_DWARF_SECTION {
        return Err(LayoutError::SectionTooLarge {
            section: name,
            size: compressed.uncompressed_size,
        });
    }
    section
        .uncompressed_data()
        .map_err(|source| LayoutError::Section {
            section: name,
            source,
        })
}

struct StructMembers {
    size: u64,
    fields: Vec<(String, u64)>,
}

type Reader<'a> = EndianSlice<'a, RunTimeEndian>;

/// Finds the first `DW_TAG_structure_type` with each of `names` and returns its size and
/// members, stopping as soon as all are found.
fn struct_members(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    names: &[&'static str],
) -> Result<Vec<(&'static str, StructMembers)>, LayoutError> {
    let mut found: Vec<(&'static str, StructMembers)> = Vec::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        // The struct whose members are being collected, with its depth.
        let mut current: Option<(isize, &'static str, StructMembers)> = None;
        while let Some(entry) = entries.next_dfs()? {
            if let Some((depth, _, members)) = current.as_mut() {
                if entry.depth() > *depth {
                    if entry.depth() == *depth + 1 && entry.tag() == gimli::DW_TAG_member {
                        let field = entry
                            .attr_value(gimli::DW_AT_name)
                            .map(|value| dwarf.attr_string(&unit, value))
                            .transpose()?;
                        let offset = entry
                            .attr_value(gimli::DW_AT_data_member_location)
                            .and_then(|value| value.udata_value());
                        if let (Some(field), Some(offset)) = (field, offset) {
                            members
                                .fields
                                .push((field.to_string_lossy().into_owned(), offset));
                        }
                    }
                    continue;
                }
                if let Some((_, name, members)) = current.take() {
                    found.push((name, members));
                    if found.len() == names.len() {
                        return Ok(found);
                    }
                }
            }
            if entry.tag() != gimli::DW_TAG_structure_type {
                continue;
            }
            let Some(value) = entry.attr_value(gimli::DW_AT_name) else {
                continue;
            };
            let struct_name = dwarf.attr_string(&unit, value)?;
            let Some(&name) = names.iter().find(|name| {
                struct_name.slice() == name.as_bytes() && !found.iter().any(|(f, _)| f == *name)
            }) else {
                continue;
            };
            let size = match entry.attr_value(gimli::DW_AT_byte_size) {
                Some(AttributeValue::Udata(size)) => size,
                Some(value) => value.udata_value().unwrap_or(0),
                None => 0,
            };
            current = Some((
                entry.depth(),
                name,
                StructMembers {
                    size,
                    fields: Vec::new(),
                },
            ));
        }
        if let Some((_, name, members)) = current.take() {
            found.push((name, members));
            if found.len() == names.len() {
                return Ok(found);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> GLayout {
        GLayout {
            size: 456,
            atomicstatus: 144,
            goid: 152,
            parent_goid: 280,
            gopc: 288,
            startpc: 304,
            stack_hi: 8,
            sched_sp: 56,
            sched_pc: 64,
            sched_bp: 96,
            waitreason: 176,
            tracking_seq: 191,
        }
    }

    #[test]
    fn hostile_offsets_are_rejected() {
        assert!(layout().check().is_ok());
        let outside = GLayout {
            goid: 452,
            ..layout()
        };
        assert!(matches!(
            outside.check(),
            Err(LayoutError::BadOffset { member: "goid", .. })
        ));
        let huge = GLayout {
            sched_bp: u64::MAX,
            ..layout()
        };
        assert!(huge.check().is_err());
        let too_big = GLayout {
            size: 1 << 40,
            ..layout()
        };
        assert!(too_big.check().is_err());
        assert_eq!(
            huge.read_len(),
            456,
            "never past the struct, never overflowing"
        );
    }

    #[test]
    fn differences_name_each_field() {
        assert!(layout().differences(&layout()).is_empty());
        let other = GLayout {
            goid: 160,
            tracking_seq: 190,
            ..layout()
        };
        assert_eq!(
            layout().differences(&other),
            vec!["goid +152, not +160", "trackingSeq +191, not +190"]
        );
    }

    #[test]
    fn creation_fields_must_sit_within_32_bytes_of_parent_goid() {
        for (gopc, startpc, apart) in [
            (288, 304, None),
            (304, 288, None),
            (288, 312, Some("startpc")),
            (320, 304, Some("gopc")),
            (292, 304, Some("gopc")),
            (288, 272, Some("startpc")),
        ] {
            let result = GLayout {
                gopc,
                startpc,
                ..layout()
            }
            .check();
            match apart {
                None => assert!(result.is_ok(), "{result:?}"),
                Some(member) => assert!(
                    matches!(result, Err(LayoutError::ApartFromParentGoid { member: m }) if m == member),
                    "{gopc} {startpc}: {result:?}"
                ),
            }
        }
    }
}
