//! Goroutine profiles in pprof's format: gzipped `profile.proto`, shaped like the one a Go
//! program serves at `/debug/pprof/goroutine` (`pprof.Lookup("goroutine").WriteTo(w, 0)`), so
//! that `go tool pprof` and every other pprof reader take what ctxleak serves as if the program
//! had served it itself.
//!
//! What Go's encoder (`runtime/pprof/proto.go`) does and this one does too:
//! - sample type and period type `goroutine`/`count`, period 1, one value per sample;
//! - samples sorted by count, largest first (Go breaks ties by the stack's PCs; here the
//!   caller's order is kept);
//! - one Location per physical frame, its inlined calls as extra Line entries, innermost first;
//!   a Location is reused wherever the same frame recurs, in one stack or across stacks;
//! - Functions deduplicated, with `system_name` equal to `name`;
//! - `runtime.goexit`, the frame every goroutine returns to, is left out;
//! - the main executable's Mapping marked `has_functions` when every frame in it was
//!   symbolized, which tells pprof not to symbolize it again from the binary.
//!
//! What differs: Go lists every executable mapping of its own process (vdso and the like
//! included); this lists the main executable only, or, when not given one, the empty stand-in
//! mapping Go writes where it cannot read its own. Function `start_line` is not known here and
//! left at 0 (pprof shows `s=0`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message as _;

/// One group of goroutines with the same stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileSample {
    /// How many goroutines have this stack.
    pub count: i64,
    /// Innermost frame first. Inlined calls are separate frames with `inlined: true`; a physical
    /// frame and the frames inlined into it share one `address`.
    pub stack: Vec<ProfileFrame>,
    /// Optional labels (e.g. "state" -> "chan receive"), emitted as string labels.
    pub labels: Vec<(String, String)>,
}

/// One frame of a stack: a physical frame, or a call inlined into the next physical frame out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileFrame {
    pub function: String,
    pub file: String,
    pub line: i64,
    /// The PC (a link-time address) of this frame's instruction; 0 if unknown.
    pub address: u64,
    pub inlined: bool,
}

/// The main executable, as pprof's Mapping: `start..limit` must be in the same address space
/// as the frames' addresses (locations whose address falls inside are attached to it; the
/// others, unknown addresses (0) among them, to no mapping), and
/// `offset` is the file offset that `start` maps, so that pprof could find an address in the
/// file if it ever had to symbolize (it does not when every frame has a function, file and line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileMapping {
    pub start: u64,
    pub limit: u64,
    pub offset: u64,
    pub file: String,
    pub build_id: String,
}

/// A gzipped profile.proto: sample type goroutine/count, period type goroutine/count, period 1,
/// time_nanos as given, one Location per distinct physical address with its inlined frames
/// as multiple Line entries (innermost first, as Go does), Function entries deduplicated,
/// string table deduplicated, a Mapping for the main executable if `mapping` is Some.
///
/// With `mapping` None, the profile has one empty Mapping (no range, no file) holding every
/// location, as Go writes on systems where it cannot list its own: pprof makes one up
/// otherwise, and warns that the main binary is unknown.
///
/// Samples are written largest count first; those with equal counts keep their order.
pub fn goroutine_profile(
    samples: &[ProfileSample],
    time_nanos: i64,
    mapping: Option<&ProfileMapping>,
) -> Vec<u8> {
    gzip(&goroutine_profile_proto(samples, time_nanos, mapping).encode_to_vec())
}

/// The profile before encoding; separate so the unit tests can look inside.
fn goroutine_profile_proto<'a>(
    samples: &'a [ProfileSample],
    time_nanos: i64,
    mapping: Option<&'a ProfileMapping>,
) -> proto::Profile {
    let mut builder = Builder::new(mapping);
    // The same order as Go's header: period type first, then the sample type; the string
    // table's order is not significant to readers, this only keeps the two alike.
    let period_type = builder.value_type("goroutine", "count");
    let sample_type = builder.value_type("goroutine", "count");

    // Largest groups first, as Go writes them (and as a reader skimming `-raw` expects);
    // the sort is stable, so ties stay in the caller's order.
    let mut ordered: Vec<&ProfileSample> = samples.iter().collect();
    ordered.sort_by_key(|sample| std::cmp::Reverse(sample.count));

    let mut encoded = Vec::with_capacity(ordered.len());
    for sample in ordered {
        let location_id = physical_frames(&sample.stack)
            .map(|frames| builder.location(frames))
            .collect();
        let label = sample
            .labels
            .iter()
            .map(|(key, value)| proto::Label {
                key: builder.string(key),
                str: builder.string(value),
                ..proto::Label::default()
            })
            .collect();
        encoded.push(proto::Sample {
            location_id,
            value: vec![sample.count],
            label,
        });
    }

    builder.finish(proto::Profile {
        sample_type: vec![sample_type],
        sample: encoded,
        time_nanos,
        period_type: Some(period_type),
        period: 1,
        ..proto::Profile::default()
    })
}

/// Go's encoder compresses with gzip's fastest level too: profiles are served on demand, and
/// their text (mostly repeated indexes) compresses well at any level.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 4 + 64), Compression::fast());
    // Writing into a Vec cannot fail: the only errors flate2 reports come from the writer.
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .expect("gzip into a Vec cannot fail")
}

/// The frame every goroutine's stack ends in, which Go's encoder leaves out.
const GOEXIT: &str = "runtime.goexit";

/// Splits a stack into its physical frames: each is the run of inlined frames (innermost
/// first) closed by the non-inlined frame they were inlined into. A stack that ends inside a
/// run (truncated by whoever read it) ends with that run on its own.
fn physical_frames(stack: &[ProfileFrame]) -> impl Iterator<Item = &[ProfileFrame]> {
    stack
        .split_inclusive(|frame| !frame.inlined)
        .filter(|frames| !frames.iter().any(|frame| frame.function == GOEXIT))
}

/// Assigns ids (1-based, in order of first use, as Go does) and deduplicates strings,
/// functions and locations.
struct Builder<'a> {
    strings: Vec<String>,
    string_ids: HashMap<&'a str, i64>,
    functions: Vec<proto::Function>,
    function_ids: HashMap<(&'a str, &'a str), u64>,
    locations: Vec<proto::Location>,
    location_ids: HashMap<LocationKey, u64>,
    mapping: Option<&'a ProfileMapping>,
    /// Whether every frame attached to the mapping had a function, file and line; None while
    /// no location is attached (Go leaves `has_functions` unset then too).
    mapping_symbolized: Option<bool>,
}

/// A Location's identity: its address and its lines. Keyed on more than the address so that
/// frames with unknown addresses (0) are not merged into one.
#[derive(Hash, PartialEq, Eq)]
struct LocationKey {
    address: u64,
    lines: Vec<(u64, i64)>,
}

/// The id of the (only) mapping.
const MAPPING_ID: u64 = 1;

impl<'a> Builder<'a> {
    fn new(mapping: Option<&'a ProfileMapping>) -> Self {
        let mut builder = Self {
            strings: Vec::new(),
            string_ids: HashMap::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
            mapping,
            mapping_symbolized: None,
        };
        // profile.proto requires string_table[0] to be "".
        builder.string("");
        builder
    }

    fn string(&mut self, s: &'a str) -> i64 {
        match self.string_ids.entry(s) {
            Entry::Occupied(entry) => *entry.get(),
            Entry::Vacant(entry) => {
                let id = i64::try_from(self.strings.len()).unwrap_or(i64::MAX);
                self.strings.push(s.to_owned());
                *entry.insert(id)
            }
        }
    }

    fn value_type(&mut self, r#type: &'a str, unit: &'a str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.string(r#type),
            unit: self.string(unit),
        }
    }

    /// Functions are identified by name and file (Go uses the name alone; in a Go binary the
    /// two agree, and keeping the file apart never shows a frame under another's file).
    fn function(&mut self, frame: &'a ProfileFrame) -> u64 {
        let key = (frame.function.as_str(), frame.file.as_str());
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = next_id(self.functions.len());
        let name = self.string(&frame.function);
        let filename = self.string(&frame.file);
        self.functions.push(proto::Function {
            id,
            name,
            // Go writes the same symbol in both: its names are not mangled.
            system_name: name,
            filename,
            start_line: 0,
        });
        self.function_ids.insert(key, id);
        id
    }

    /// The Location of one physical frame (`frames`: innermost first, never empty).
    fn location(&mut self, frames: &'a [ProfileFrame]) -> u64 {
        let address = frames
            .iter()
            .map(|frame| frame.address)
            .find(|&address| address != 0)
            .unwrap_or(0);
        let lines: Vec<(u64, i64)> = frames
            .iter()
            .map(|frame| (self.function(frame), frame.line))
            .collect();
        let key = LocationKey { address, lines };
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }

        // Without a real mapping every location is in the stand-in (as Go's encoder does).
        let attached = self
            .mapping
            .is_none_or(|mapping| mapping.start <= address && address < mapping.limit);
        let mapping_id = if attached {
            // Go's test for a symbolized frame, less its PC: ours may be unknown (0) while the
            // function, file and line are, and it is those that spare pprof a symbolization.
            let symbolized = frames.iter().all(|frame| {
                !frame.function.is_empty() && !frame.file.is_empty() && frame.line != 0
            });
            self.mapping_symbolized = Some(self.mapping_symbolized.unwrap_or(true) && symbolized);
            MAPPING_ID
        } else {
            0
        };
        let id = next_id(self.locations.len());
        self.locations.push(proto::Location {
            id,
            mapping_id,
            address,
            line: key
                .lines
                .iter()
                .map(|&(function_id, line)| proto::Line {
                    function_id,
                    line,
                    column: 0,
                })
                .collect(),
            is_folded: false,
        });
        self.location_ids.insert(key, id);
        id
    }

    fn finish(mut self, mut profile: proto::Profile) -> proto::Profile {
        // pprof wants a mapping: given none, it makes up an empty one that does not say the
        // functions are known, and complains that the main binary is not available. Go's
        // encoder, where it cannot read its own mappings, writes that empty one itself, with
        // has_functions; so does this.
        let (start, limit, offset, file, build_id) = match self.mapping {
            Some(m) => (
                m.start,
                m.limit,
                m.offset,
                m.file.as_str(),
                m.build_id.as_str(),
            ),
            None => (0, 0, 0, "", ""),
        };
        let filename = self.string(file);
        let build_id = self.string(build_id);
        profile.mapping.push(proto::Mapping {
            id: MAPPING_ID,
            memory_start: start,
            memory_limit: limit,
            file_offset: offset,
            filename,
            build_id,
            // Only has_functions, as Go sets: readers treat the others as unknown.
            has_functions: self.mapping_symbolized == Some(true),
            ..proto::Mapping::default()
        });
        profile.location = self.locations;
        profile.function = self.functions;
        profile.string_table = self.strings;
        profile
    }
}

/// Ids are 1-based: 0 means "none" in profile.proto.
fn next_id(len: usize) -> u64 {
    u64::try_from(len).map_or(u64::MAX, |len| len.saturating_add(1))
}

/// The messages of pprof's profile.proto (github.com/google/pprof/proto/profile.proto), with
/// its field numbers, written out for prost's derive so no protoc is needed. Strings are
/// indexes into `Profile::string_table`. The numbers agree with Go's own encoder
/// (`runtime/pprof/proto.go`) and pprof's decoder (`github.com/google/pprof/profile/encode.go`).
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
        #[prost(int64, tag = "15")]
        pub doc_url: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn frame(function: &str, line: i64, address: u64, inlined: bool) -> ProfileFrame {
        ProfileFrame {
            function: function.to_owned(),
            file: format!("/src/{}.go", function.replace(['.', '/'], "_")),
            line,
            address,
            inlined,
        }
    }

    fn decode(gz: &[u8]) -> proto::Profile {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut raw)
            .expect("the profile is gzip");
        proto::Profile::decode(raw.as_slice()).expect("the profile decodes")
    }

    fn string(profile: &proto::Profile, index: i64) -> &str {
        &profile.string_table[usize::try_from(index).expect("non-negative index")]
    }

    /// Per location: its address, and its lines as (function, line).
    fn lines(profile: &proto::Profile, id: u64) -> (u64, Vec<(String, i64)>) {
        let location = profile
            .location
            .iter()
            .find(|l| l.id == id)
            .expect("location exists");
        let lines = location
            .line
            .iter()
            .map(|line| {
                let function = profile
                    .function
                    .iter()
                    .find(|f| f.id == line.function_id)
                    .expect("function exists");
                (string(profile, function.name).to_owned(), line.line)
            })
            .collect();
        (location.address, lines)
    }

    fn samples() -> Vec<ProfileSample> {
        vec![
            ProfileSample {
                count: 1,
                stack: vec![
                    frame("runtime.gopark", 10, 0x1000, false),
                    frame("main.leaf", 5, 0x2000, true),
                    frame("main.middle", 6, 0x2000, true),
                    frame("main.outer", 7, 0x2000, false),
                    frame(GOEXIT, 1700, 0x3000, false),
                ],
                labels: vec![("state".into(), "chan receive".into())],
            },
            ProfileSample {
                count: 4,
                stack: vec![
                    frame("runtime.gopark", 10, 0x1000, false),
                    frame("main.recurse", 20, 0x4000, false),
                    frame("main.recurse", 20, 0x4000, false),
                ],
                labels: vec![],
            },
        ]
    }

    #[test]
    fn header_is_goroutine_count() {
        let profile = decode(&goroutine_profile(
            &samples(),
            1_700_000_000_123_456_789,
            None,
        ));
        assert_eq!(profile.string_table[0], "");
        let period_type = profile.period_type.clone().expect("period type");
        assert_eq!(string(&profile, period_type.r#type), "goroutine");
        assert_eq!(string(&profile, period_type.unit), "count");
        assert_eq!(profile.sample_type.len(), 1);
        assert_eq!(profile.sample_type[0], period_type);
        assert_eq!(profile.period, 1);
        assert_eq!(profile.time_nanos, 1_700_000_000_123_456_789);
        // Without a mapping: Go's empty stand-in, holding every location.
        assert_eq!(profile.mapping.len(), 1);
        let m = &profile.mapping[0];
        assert_eq!(
            (m.id, m.memory_start, m.memory_limit, m.filename),
            (1, 0, 0, 0)
        );
        assert!(m.has_functions);
        assert!(profile.location.iter().all(|l| l.mapping_id == 1));
    }

    #[test]
    fn samples_sorted_and_locations_shared() {
        let profile = decode(&goroutine_profile(&samples(), 0, None));
        // The 4 comes first; gopark's location is shared; the recursive frame is one location
        // used twice.
        assert_eq!(profile.sample[0].value, vec![4]);
        assert_eq!(profile.sample[0].location_id, vec![1, 2, 2]);
        assert_eq!(profile.sample[1].value, vec![1]);
        // goexit is left out, as Go does.
        assert_eq!(profile.sample[1].location_id, vec![1, 3]);
        assert_eq!(profile.location.len(), 3);

        assert_eq!(
            lines(&profile, 3),
            (
                0x2000,
                vec![
                    ("main.leaf".to_owned(), 5),
                    ("main.middle".to_owned(), 6),
                    ("main.outer".to_owned(), 7)
                ]
            )
        );
        assert_eq!(
            lines(&profile, 2),
            (0x4000, vec![("main.recurse".to_owned(), 20)])
        );

        // Every function once, with system_name = name; every string once.
        let names: Vec<&str> = profile
            .function
            .iter()
            .map(|f| string(&profile, f.name))
            .collect();
        assert_eq!(
            names,
            [
                "runtime.gopark",
                "main.recurse",
                "main.leaf",
                "main.middle",
                "main.outer"
            ]
        );
        assert!(profile.function.iter().all(|f| f.system_name == f.name));
        let mut table = profile.string_table.clone();
        table.sort();
        table.dedup();
        assert_eq!(table.len(), profile.string_table.len());

        let label = &profile.sample[1].label;
        assert_eq!(label.len(), 1);
        assert_eq!(string(&profile, label[0].key), "state");
        assert_eq!(string(&profile, label[0].str), "chan receive");
        assert!(profile.sample[0].label.is_empty());
    }

    #[test]
    fn unknown_addresses_are_not_merged() {
        let samples = vec![ProfileSample {
            count: 1,
            stack: vec![frame("main.a", 1, 0, false), frame("main.b", 2, 0, false)],
            labels: vec![],
        }];
        let profile = decode(&goroutine_profile(&samples, 0, None));
        assert_eq!(profile.sample[0].location_id, vec![1, 2]);
    }

    #[test]
    fn mapping_attached_and_marked_symbolized() {
        let mapping = ProfileMapping {
            start: 0x1000,
            limit: 0x3000,
            offset: 0,
            file: "/srv/app".into(),
            build_id: "abc123".into(),
        };
        let profile = decode(&goroutine_profile(&samples(), 0, Some(&mapping)));
        assert_eq!(profile.mapping.len(), 1);
        let m = &profile.mapping[0];
        assert_eq!((m.id, m.memory_start, m.memory_limit), (1, 0x1000, 0x3000));
        assert_eq!(string(&profile, m.filename), "/srv/app");
        assert_eq!(string(&profile, m.build_id), "abc123");
        assert!(m.has_functions);
        // 0x4000 is outside the mapping: no mapping id, as Go does for unmapped PCs.
        let mapped: Vec<(u64, u64)> = profile
            .location
            .iter()
            .map(|l| (l.address, l.mapping_id))
            .collect();
        assert_eq!(mapped, [(0x1000, 1), (0x4000, 0), (0x2000, 1)]);

        // One frame without a line: pprof may symbolize the mapping itself.
        let mut unsymbolized = samples();
        unsymbolized[0].stack[0].line = 0;
        let profile = decode(&goroutine_profile(&unsymbolized, 0, Some(&mapping)));
        assert!(!profile.mapping[0].has_functions);
        // Outside the mapping, it does not count.
        let mut outside = samples();
        outside[1].stack[1].function.clear();
        let profile = decode(&goroutine_profile(&outside, 0, Some(&mapping)));
        assert!(profile.mapping[0].has_functions);
        // No location in the mapping: nothing is known about it (Go leaves such mappings so).
        let profile = decode(&goroutine_profile(&[], 0, Some(&mapping)));
        assert!(!profile.mapping[0].has_functions);
    }

    /// The field numbers on the wire, read without prost: a check of the derive attributes
    /// against profile.proto that does not go through the same attributes.
    #[test]
    fn wire_field_numbers() {
        let mapping = ProfileMapping {
            start: 0x1000,
            limit: 0x3000,
            offset: 0x10,
            file: "/srv/app".into(),
            build_id: "abc".into(),
        };
        let gz = goroutine_profile(&samples(), 5, Some(&mapping));
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut raw)
            .expect("gzip");
        let top = fields(&raw);
        let numbers: std::collections::BTreeSet<u64> = top.iter().map(|(n, _)| *n).collect();
        // sample_type, sample, mapping, location, function, string_table, time_nanos,
        // period_type, period.
        assert_eq!(
            numbers.into_iter().collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6, 9, 11, 12]
        );
        assert!(top.contains(&(9, Field::Varint(5))));
        assert!(top.contains(&(12, Field::Varint(1))));
        assert!(top.contains(&(6, Field::Bytes(b"goroutine".to_vec()))));
        let mapping = top
            .iter()
            .find_map(|(n, f)| match (n, f) {
                (3, Field::Bytes(b)) => Some(fields(b)),
                _ => None,
            })
            .expect("a mapping");
        // id, memory_start, memory_limit, file_offset, filename, build_id, has_functions.
        let numbers: Vec<u64> = mapping.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7]);
        assert!(mapping.contains(&(2, Field::Varint(0x1000))));
        assert!(mapping.contains(&(4, Field::Varint(0x10))));
        // A location with inlined frames: id, mapping_id, address, then three lines, each
        // function_id and line.
        let location = top
            .iter()
            .filter_map(|(n, f)| match (n, f) {
                (4, Field::Bytes(b)) => Some(fields(b)),
                _ => None,
            })
            .find(|l| l.contains(&(3, Field::Varint(0x2000))))
            .expect("the inlined location");
        let numbers: Vec<u64> = location.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 4, 4]);
        match &location[3] {
            (4, Field::Bytes(line)) => assert_eq!(
                fields(line).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
                [1, 2]
            ),
            other => panic!("not a line: {other:?}"),
        }
    }

    #[derive(Debug, PartialEq)]
    enum Field {
        Varint(u64),
        Bytes(Vec<u8>),
    }

    /// A minimal protobuf reader: (field number, value) in wire order.
    fn fields(mut data: &[u8]) -> Vec<(u64, Field)> {
        fn varint(data: &mut &[u8]) -> u64 {
            let mut value = 0u64;
            for shift in (0..64).step_by(7) {
                let (&byte, rest) = data.split_first().expect("varint ends");
                *data = rest;
                value |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    break;
                }
            }
            value
        }
        let mut out = Vec::new();
        while !data.is_empty() {
            let key = varint(&mut data);
            let field = match key & 7 {
                0 => Field::Varint(varint(&mut data)),
                2 => {
                    let len = usize::try_from(varint(&mut data)).expect("length");
                    let (bytes, rest) = data.split_at(len);
                    data = rest;
                    Field::Bytes(bytes.to_vec())
                }
                wire => panic!("unexpected wire type {wire}"),
            };
            out.push((key >> 3, field));
        }
        out
    }
}
