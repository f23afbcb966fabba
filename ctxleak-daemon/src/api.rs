//! The JSON API that `ctxleak attach` serves next to its metrics, and that `ctxleak top` (and any
//! other tool) reads. These types are the contract: the server serializes them, clients
//! deserialize them, so a change here is a change for both.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where [`GroupsResponse`] is served, relative to the metrics address.
pub const GROUPS_PATH: &str = "/api/groups";

/// GET /api/groups
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupsResponse {
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    /// When the census was taken (Unix milliseconds).
    pub taken_at_unix_ms: u64,
    /// All live user goroutines (what runtime.NumGoroutine() says) and runtime ones.
    pub goroutines_user: u64,
    pub goroutines_system: u64,
    /// Sorted: suspects first by rank, then by count descending.
    pub groups: Vec<Group>,
    /// The probes at the census (the groups come from memory either way; creation counts
    /// and context figures are samples while they are off part of the time).
    #[serde(default)]
    pub probes: ProbeState,
}

/// Goroutines created by the same `go` statement and blocked at the same place for the same
/// reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Stable across censuses for the same (created_by, blocked_at, wait_reason).
    pub id: String,
    pub count: u64,
    /// "waiting", "runnable", "running", "syscall", ...
    pub state: String,
    /// The runtime's own wait reason string ("chan receive", "select", "sync.Mutex.Lock", ...);
    /// empty unless waiting.
    pub wait_reason: String,
    /// The `go` statement that created these goroutines.
    pub created_by: Option<SourceLocation>,
    /// Where they are blocked: the first frame outside the runtime in their stack.
    pub blocked_at: Option<SourceLocation>,
    /// Seconds the oldest member has been in this group (blocked at the same place).
    pub oldest_age_s: f64,
    /// Net change in count over the short and the long window (goroutines), and the windows'
    /// lengths in seconds.
    pub growth_short: i64,
    pub growth_long: i64,
    pub window_short_s: u64,
    pub window_long_s: u64,
    /// Leak suspect: blocked at a line of the program, still growing by enough to matter, and
    /// its oldest member older than the threshold (`groups::SuspectRules`).
    pub suspect: bool,
    /// 1 = most suspicious; 0 for non-suspects.
    pub rank: u32,
    /// Members stuck: blocked in a wait that does not end by itself in a healthy program (a
    /// lock, `WaitGroup.Wait`, `Cond.Wait`, a channel send, ...; `groups::STUCK_WAITS`)
    /// without running once for at least `--stuck-after`. A separate verdict from `suspect`:
    /// a deadlock does not grow.
    #[serde(default)]
    pub stuck: u64,
    /// Seconds the longest stuck of them has not run, at least; 0 when none is stuck.
    #[serde(default)]
    pub stuck_for_s: f64,
    /// Where `stuck_for_s` comes from.
    #[serde(default)]
    pub stuck_since: StuckSince,
    /// For stuck members blocked on channels: what their channels say (`chans`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelEvidence>,
    /// Members parked on the `Done()` channel of an unreleased context (older than the
    /// context grace): they wait for a cancellation that has not come.
    #[serde(default)]
    pub listening: u64,
    /// Where the context the first of them listens on was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listens_on: Option<SourceLocation>,
    /// One member's stack, innermost first.
    pub stack: Vec<SourceLocation>,
}

/// What the channels a stuck group's members wait on say (`chans`), at the last census.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChannelEvidence {
    /// Members whose channel wait was read.
    pub members: u64,
    /// Distinct channels they wait on: 1 is "all N wait on one channel".
    pub channels: u64,
    /// Goroutines parked receiving on those channels ("the other side" of a send), and
    /// sending on them.
    pub receivers_waiting: u64,
    pub senders_waiting: u64,
    /// Values in their buffers, and the buffers' sizes (0: unbuffered).
    pub buffered: u64,
    pub capacity: u64,
    pub closed: bool,
    /// Seconds no census saw their state change (buffer counters, queue heads and lengths),
    /// as far back as ctxleak has read them.
    pub unchanged_for_s: f64,
    /// The head of each one's send queue is a stuck member: nothing was received since it
    /// stuck (a receive takes the head when senders wait).
    pub head_stuck: bool,
    /// Stuck with high confidence: a send on one channel that no one receives, with no
    /// receiver parked on it and no progress for `--stuck-after`. Never for receives (an idle
    /// pool looks the same).
    pub confident: bool,
}

impl ChannelEvidence {
    /// The evidence in words: "all 3 wait on one channel, nobody receives, no progress for
    /// 20s; high confidence".
    pub fn summary(&self) -> String {
        let mut parts = vec![if self.channels == 1 {
            format!("all {} wait on one channel", self.members)
        } else {
            format!("{} wait on {} channels", self.members, self.channels)
        }];
        if self.closed {
            parts.push("closed".to_owned());
        }
        if self.capacity > 0 {
            parts.push(format!("buffer {}/{}", self.buffered, self.capacity));
        }
        parts.push(match (self.receivers_waiting, self.senders_waiting) {
            (0, 0) => "nobody else waits on it".to_owned(),
            (0, senders) => format!("{senders} parked sending, nobody receiving"),
            (receivers, 0) => format!("{receivers} parked receiving, nobody sending"),
            (receivers, senders) => format!("{receivers} receiving, {senders} sending"),
        });
        if self.head_stuck {
            parts.push("nothing received since they stuck".to_owned());
        } else {
            parts.push(format!("no progress for {:.0}s", self.unchanged_for_s));
        }
        let mut text = parts.join(", ");
        if self.confident {
            text.push_str("; high confidence");
        }
        text
    }
}

/// Where a stuck goroutine's "has not run since" comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StuckSince {
    /// ctxleak's own censuses: since the first one that saw it blocked there, still.
    #[default]
    Ctxleak,
    /// The runtime's record, `g.waitsince` (`groups::GroupTracker::runtime_bounds`): it was
    /// blocked before ctxleak first saw it.
    Runtime,
    /// Its exact park time (park timing, a `gopark` probe).
    ParkTime,
}

impl StuckSince {
    /// How a report names it: "ctxleak", "runtime", "park time".
    pub fn label(self) -> &'static str {
        match self {
            Self::Ctxleak => "ctxleak",
            Self::Runtime => "runtime",
            Self::ParkTime => "park time",
        }
    }
}

/// A place in the target's source code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceLocation {
    pub function: String,
    pub file: String,
    pub line: u32,
}

impl fmt::Display for SourceLocation {
    /// `function (file:line)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.function, self.file, self.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_scale_samples_only() {
        assert_eq!(estimate(10, 0.25), Some(40));
        assert_eq!(estimate(3, 0.7), Some(4));
        assert_eq!(
            estimate(10, 1.0),
            None,
            "not sampled: the count is the total"
        );
        assert_eq!(estimate(1, 0.5), None, "one is no sample to scale");
        assert_eq!(estimate(10, 0.001), None, "too little coverage to scale");
    }

    #[test]
    fn source_location_display() {
        let location = SourceLocation {
            function: "main.worker".into(),
            file: "/src/app/main.go".into(),
            line: 42,
        };
        assert_eq!(location.to_string(), "main.worker (/src/app/main.go:42)");
    }

    #[test]
    fn round_trip() {
        let response = GroupsResponse {
            pid: 1,
            exe: "/bin/app".into(),
            go_version: "go1.25.5".into(),
            taken_at_unix_ms: 1_700_000_000_000,
            goroutines_user: 3,
            goroutines_system: 4,
            probes: ProbeState::default(),
            groups: vec![Group {
                id: "g1".into(),
                count: 3,
                state: "waiting".into(),
                wait_reason: "chan receive".into(),
                created_by: None,
                blocked_at: Some(SourceLocation {
                    function: "main.f".into(),
                    file: "main.go".into(),
                    line: 7,
                }),
                oldest_age_s: 1.5,
                growth_short: -1,
                growth_long: 2,
                window_short_s: 60,
                window_long_s: 900,
                suspect: false,
                rank: 0,
                stuck: 0,
                stuck_for_s: 0.0,
                stuck_since: StuckSince::default(),
                channel: None,
                listening: 0,
                listens_on: None,
                stack: vec![],
            }],
        };
        let json = serde_json::to_string(&response).unwrap();
        assert!(json.contains(r#""created_by":null"#), "{json}");
        let back: GroupsResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(back, response);
    }
}

pub const LEAKS_PATH: &str = "/api/leaks";

/// GET /api/leaks: the `context` verdicts and the stuck goroutines of the last census.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaksResponse {
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    pub taken_at_unix_ms: u64,
    /// False when the binary has no `context` cancel tree to probe (or `--no-contexts`).
    pub contexts_probed: bool,
    /// A goroutine is reported once its context has been cancelled this long.
    pub grace_s: f64,
    /// cancelCtx children still in their parent's `children` map, not cancelled, by the line
    /// that created them; most first.
    pub unreleased: Vec<UnreleasedContexts>,
    /// Goroutines started under a context that was cancelled more than `grace_s` ago and
    /// are still alive, by their `go` line, their context's creation line and wait reason.
    pub outliving: Vec<OutlivingGoroutines>,
    /// The goroutine groups with stuck members (`Group::stuck`), as in `/api/groups`: one-shot
    /// deadlocks and sends nobody receives, which do not grow. Longest stuck first.
    #[serde(default)]
    pub stuck: Vec<Group>,
    /// ctxleak's count of children per parent against `len(parent.children)` in memory.
    pub children_check: ChildrenCheck,
    pub contexts_created: u64,
    pub contexts_cancelled: u64,
    /// When sampled: `contexts_created` divided by `probes.coverage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contexts_created_estimate: Option<u64>,
    /// Contexts ctxleak holds in memory (unreleased, or with goroutines bound to them).
    pub contexts_tracked: u64,
    pub goroutines_bound: u64,
    /// Whether the probes were on, and so whether the figures above are totals or samples.
    #[serde(default)]
    pub probes: ProbeState,
}

/// The probes of a watched process under `--max-overhead` (see `budget.rs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeState {
    /// `--max-overhead`: "exact", "1%", "0%" (memory only).
    pub max_overhead: String,
    /// Whether they are attached now.
    pub on: bool,
    /// Share of the last minute they were attached.
    pub duty: f64,
    /// Share of the time since ctxleak attached that they were attached: sampled context
    /// counts are about this share of the totals (the `estimate`s divide by it).
    #[serde(default = "all_the_time")]
    pub coverage: f64,
    /// They were off at some time since ctxleak attached: contexts (created, cancelled,
    /// unreleased, outliving) and created/exited goroutines are samples of what happened,
    /// not totals. Goroutine counts, states and stacks come from memory and stay exact.
    pub sampled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnreleasedContexts {
    /// Where `WithCancel`/`WithTimeout`/... was called (the first frame outside `context`);
    /// None when unknown.
    pub site: Option<SourceLocation>,
    pub count: u64,
    /// Of those, how many were made by a goroutine that has exited: nobody can call their
    /// cancel any more (the runtime counterpart of `go vet`'s lostcancel).
    pub orphaned: u64,
    pub oldest_age_s: f64,
    /// Change in `count` over the last `window_s` seconds.
    pub growth: i64,
    pub window_s: u64,
    /// When the probes were not on all the time (`probes.sampled`): `count` divided by
    /// `probes.coverage`, an estimate of the total; absent when `count` is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<u64>,
    /// The goroutines parked on these contexts' `Done()` channels (they *listen on* them;
    /// `listeners.rs`), by the line they are blocked at, most first. A goroutine that received
    /// its context later (through a channel, a struct, a pool) and waits on it is here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ContextListeners>,
}

/// Goroutines listening on unreleased contexts of one creation site, blocked at one line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextListeners {
    /// Where they are blocked (the first frame outside the runtime); None when unknown.
    pub blocked_at: Option<SourceLocation>,
    /// "chan receive" or "select".
    pub wait_reason: String,
    pub count: u64,
    /// A few of their goids, lowest first.
    pub goids: Vec<u64>,
}

/// How many goids a finding lists.
pub const GOID_SAMPLE: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutlivingGoroutines {
    /// The `go` statement that started them.
    pub goroutine_site: Option<SourceLocation>,
    /// Where the context they were started under was created.
    pub context_site: Option<SourceLocation>,
    pub state: String,
    pub wait_reason: String,
    pub count: u64,
    /// How long ago the oldest one's context was cancelled.
    pub oldest_cancelled_s: f64,
    pub growth: i64,
    pub window_s: u64,
    /// As [`UnreleasedContexts::estimate`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChildrenCheck {
    /// Sum over parents of |tracked − in memory|: 0 when ctxleak's view is the target's.
    /// Children registered before ctxleak attached count here too.
    pub mismatch: u64,
    pub parents: Vec<ParentChildren>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentChildren {
    /// Address of the parent's `children` map in the target.
    pub children_map: String,
    pub tracked: u64,
    /// `len(children)` read from the target; None if unreadable.
    pub in_memory: Option<u64>,
}

/// `ProbeState::coverage` of a response that predates it: the probes were always on.
fn all_the_time() -> f64 {
    1.0
}

/// A sampled count scaled to an estimate of the total: `count / coverage`, when there is a
/// sample to scale (a count of at least two, probes on at least 1% of the time).
pub fn estimate(count: u64, coverage: f64) -> Option<u64> {
    (count >= 2 && (0.01..1.0).contains(&coverage))
        .then(|| (count as f64 / coverage).round() as u64)
}
