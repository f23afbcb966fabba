//! From a census to what an on-call engineer asks: which line is leaking goroutines, how
//! many, since when, how fast.
//!
//! Each goroutine is symbolized (its stack from `g.sched`, its creation site from `g.gopc`),
//! user goroutines are grouped by (state and wait reason, the `go` statement that created
//! them, where they are blocked), and each group's count is followed over a short and a long
//! window. A group is a leak suspect when it grew over both windows and its oldest member has
//! been blocked there longer than a threshold, the signal LeakProf used in production:
//! goroutines piling up at one line.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api::{Group, SourceLocation};
use crate::census::{self, Census, GoroutineRecord};
use crate::goexe::GoBinary;
use crate::goexe::symbolize::{self, Frame};
use crate::procmem::ProcessMemory;
use crate::tracker::{GoroutineKind, kind_of_function};

/// One frame of a goroutine's stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct StackFrame {
    pub function: String,
    pub file: String,
    pub line: u32,
    /// Inlined into the next frame.
    pub inlined: bool,
    /// A compiler-generated wrapper (such as `main.main.gowrap1`), which Go's own tracebacks
    /// and profiles leave out.
    pub wrapper: bool,
    /// The return address (link-time) of the physical frame this frame belongs to; inlined
    /// frames share it with the frame they are inlined into.
    pub pc: u64,
}

/// One goroutine, symbolized.
#[derive(Clone, Debug, Serialize)]
pub struct GoroutineView {
    pub goid: u64,
    pub parent_goid: u64,
    pub system: bool,
    pub state: &'static str,
    /// The runtime's wait reason string; empty unless waiting.
    pub wait_reason: String,
    pub created_by: Option<SourceLocation>,
    pub start_function: Option<String>,
    /// Innermost first. Empty for a running goroutine (its saved context is stale).
    pub stack: Vec<StackFrame>,
    /// Exactly how long it has been parked, when park timing (a `gopark` probe) is on.
    pub parked_for_s: Option<f64>,
}

/// GET /api/goroutines: every live goroutine of the last census.
#[derive(Clone, Debug, Serialize)]
pub struct GoroutinesResponse {
    pub pid: u32,
    pub taken_at_unix_ms: u64,
    pub goroutines: Vec<GoroutineView>,
}

/// Turns PCs into frames, caching by PC: goroutines blocked at one line share their PCs.
pub struct Symbolizer<'a> {
    binary: &'a GoBinary,
    bias: u64,
    cache: HashMap<u64, Vec<Frame>>,
}

impl<'a> Symbolizer<'a> {
    pub fn new(binary: &'a GoBinary, bias: u64) -> Self {
        Self {
            binary,
            bias,
            cache: HashMap::new(),
        }
    }

    /// Frames of the call that returns to `pc` (a runtime address), innermost first: the
    /// runtime's rule for every frame of a saved context and for `g.gopc`.
    fn frames(&mut self, pc: u64) -> &[Frame] {
        let (binary, bias) = (self.binary, self.bias);
        self.cache.entry(pc).or_insert_with(|| {
            symbolize::symbolize_return_address(&binary.pclntab, pc.wrapping_sub(bias))
                .unwrap_or_default()
        })
    }

    fn view(&mut self, memory: &ProcessMemory, record: &GoroutineRecord) -> GoroutineView {
        let wrapper = self.binary.pclntab.wrapper_func_id();
        // The innermost frame's pointer from the function table: at `sched.pc` the frame is
        // `sp_delta` bytes deep, so the function was entered with SP = sched.sp + delta, and its
        // prologue pushed BP just below the return address there.
        let link_pc = record.sched_pc.wrapping_sub(self.bias);
        let first_bp = self
            .binary
            .pclntab
            .function_at(link_pc)
            .and_then(|function| function.sp_delta(link_pc))
            .and_then(|delta| u64::try_from(delta).ok())
            .filter(|&delta| delta >= 8)
            .map(|delta| record.sched_sp + delta - 8);
        let mut stack = Vec::new();
        for pc in census::unwind(memory, record, first_bp) {
            let link_pc = pc.wrapping_sub(self.bias);
            for frame in self.frames(pc) {
                stack.push(StackFrame {
                    function: frame.function.clone(),
                    file: frame.file.clone(),
                    line: frame.line,
                    inlined: frame.inlined,
                    wrapper: Some(frame.func_id) == wrapper,
                    pc: link_pc,
                });
            }
        }
        let created_by = self.frames(record.gopc).first().map(location);
        let start_function = self
            .binary
            .function_name_at(record.startpc.wrapping_sub(self.bias))
            .map(|name| name.into_owned());
        let system = kind_of_function(start_function.as_deref()) == GoroutineKind::System;
        let waiting = record.status & !0x1000 == census::STATUS_WAITING;
        let wait_reason = if waiting {
            self.binary
                .wait_reasons
                .get(usize::from(record.waitreason))
                .cloned()
                .unwrap_or_default()
        } else {
            String::new()
        };
        GoroutineView {
            goid: record.goid,
            parent_goid: record.parent_goid,
            system,
            state: census::status_name(record.status),
            wait_reason,
            created_by,
            start_function,
            stack,
            parked_for_s: None,
        }
    }
}

fn location(frame: &Frame) -> SourceLocation {
    SourceLocation {
        function: frame.function.clone(),
        file: frame.file.clone(),
        line: frame.line,
    }
}

/// Symbolizes every goroutine of `census`, reading stacks from `memory`.
pub fn symbolize_census(
    census: &Census,
    memory: &ProcessMemory,
    symbolizer: &mut Symbolizer<'_>,
) -> Vec<GoroutineView> {
    census
        .goroutines
        .iter()
        .map(|record| symbolizer.view(memory, record))
        .collect()
}

/// User goroutines grouped by identical stack, as Go's goroutine profile has them (wrapper
/// frames left out, as `runtime.CallersFrames` does). Running goroutines, whose stacks
/// ctxleak cannot see, are one sample with an empty stack.
pub fn profile_samples(goroutines: &[GoroutineView]) -> Vec<crate::pprof::ProfileSample> {
    use crate::pprof::{ProfileFrame, ProfileSample};
    let mut samples: HashMap<Vec<&StackFrame>, i64> = HashMap::new();
    for goroutine in goroutines.iter().filter(|g| !g.system) {
        let stack = goroutine
            .stack
            .iter()
            .filter(|frame| !frame.wrapper)
            .collect();
        *samples.entry(stack).or_insert(0) += 1;
    }
    let frame = |frame: &&StackFrame| ProfileFrame {
        function: frame.function.clone(),
        file: frame.file.clone(),
        line: i64::from(frame.line),
        address: frame.pc,
        inlined: frame.inlined,
    };
    let mut samples: Vec<ProfileSample> = samples
        .into_iter()
        .map(|(stack, count)| ProfileSample {
            count,
            stack: stack.iter().map(frame).collect(),
            labels: Vec::new(),
        })
        .collect();
    samples.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.stack.len().cmp(&b.stack.len()))
    });
    samples
}

/// Where a goroutine is blocked: its first frame outside the runtime's own packages and the
/// `sync` primitives and raw system calls (for `mu.Lock()` that is the caller's line, not
/// `sync.(*Mutex).Lock`),
/// skipping compiler wrappers.
pub fn blocked_at(stack: &[StackFrame]) -> Option<SourceLocation> {
    const INTERNAL: &[&str] = &[
        "runtime.",
        "internal/",
        "sync.",
        "sync/atomic.",
        "syscall.",
        "time.Sleep",
    ];
    stack
        .iter()
        .find(|frame| {
            !frame.wrapper
                && !INTERNAL
                    .iter()
                    .any(|prefix| frame.function.starts_with(prefix))
        })
        .map(|frame| SourceLocation {
            function: frame.function.clone(),
            file: frame.file.clone(),
            line: frame.line,
        })
}

/// When a group is a leak suspect (flags of `ctxleak attach`).
#[derive(Clone, Copy, Debug)]
pub struct SuspectRules {
    pub window_short: Duration,
    pub window_long: Duration,
    /// The oldest member must have been blocked in the group at least this long.
    pub min_age: Duration,
}

impl Default for SuspectRules {
    fn default() -> Self {
        Self {
            window_short: Duration::from_secs(60),
            window_long: Duration::from_secs(600),
            min_age: Duration::from_secs(30),
        }
    }
}

/// Follows groups across censuses: per-goroutine time in its group, per-group count history.
pub struct GroupTracker {
    rules: SuspectRules,
    first_census: Option<Instant>,
    /// goid -> (group id, first seen in that group).
    members: HashMap<u64, (String, Instant)>,
    /// group id -> (time, count), oldest first, reaching back one sample past the long window.
    history: HashMap<String, VecDeque<(Instant, u64)>>,
}

impl GroupTracker {
    pub fn new(rules: SuspectRules) -> Self {
        Self {
            rules,
            first_census: None,
            members: HashMap::new(),
            history: HashMap::new(),
        }
    }

    /// Groups the user goroutines of a census taken at `now`; suspects first by rank, then by
    /// count.
    pub fn update(&mut self, now: Instant, goroutines: &[GoroutineView]) -> Vec<Group> {
        let first = *self.first_census.get_or_insert(now);
        let mut groups: HashMap<String, Group> = HashMap::new();
        let mut members = HashMap::new();
        for goroutine in goroutines.iter().filter(|g| !g.system) {
            let blocked = blocked_at(&goroutine.stack);
            let id = group_id(goroutine, blocked.as_ref());
            // Exact when the park time is known; else from the census that first saw it in
            // this group (a goroutine that moved to another group starts its age again).
            let parked_since = goroutine
                .parked_for_s
                .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
                .and_then(|parked| now.checked_sub(parked));
            let since = match (parked_since, self.members.get(&goroutine.goid)) {
                (Some(since), _) => since,
                (None, Some((old, since))) if *old == id => *since,
                _ => now,
            };
            members.insert(goroutine.goid, (id.clone(), since));
            let group = groups.entry(id.clone()).or_insert_with(|| Group {
                id,
                count: 0,
                state: goroutine.state.to_owned(),
                wait_reason: goroutine.wait_reason.clone(),
                created_by: goroutine.created_by.clone(),
                blocked_at: blocked,
                oldest_age_s: 0.0,
                growth_short: 0,
                growth_long: 0,
                window_short_s: self.rules.window_short.as_secs(),
                window_long_s: self.rules.window_long.as_secs(),
                suspect: false,
                rank: 0,
                stack: goroutine
                    .stack
                    .iter()
                    .map(|f| SourceLocation {
                        function: f.function.clone(),
                        file: f.file.clone(),
                        line: f.line,
                    })
                    .collect(),
            });
            group.count += 1;
            group.oldest_age_s = group
                .oldest_age_s
                .max(now.duration_since(since).as_secs_f64());
        }
        self.members = members;

        // Count histories: a group first seen after the first census grew from nothing.
        for (id, group) in &groups {
            let history = self.history.entry(id.clone()).or_default();
            if history.is_empty() && now > first {
                history.push_back((first, 0));
            }
            history.push_back((now, group.count));
        }
        for (id, history) in self.history.iter_mut() {
            if !groups.contains_key(id) {
                history.push_back((now, 0));
            }
            // Keep one sample at or before the long window's start.
            while history.len() > 2 && history[1].0 <= now - self.rules.window_long.min(now - first)
            {
                history.pop_front();
            }
        }
        self.history
            .retain(|_, history| history.iter().any(|&(_, count)| count > 0));

        let mut groups: Vec<Group> = groups.into_values().collect();
        for group in &mut groups {
            let history = &self.history[&group.id];
            group.growth_short = growth(history, now, self.rules.window_short);
            group.growth_long = growth(history, now, self.rules.window_long);
            group.suspect = group.growth_short > 0
                && group.growth_long > 0
                && group.oldest_age_s >= self.rules.min_age.as_secs_f64();
        }
        groups.sort_by(|a, b| {
            b.suspect
                .cmp(&a.suspect)
                .then(b.growth_long.cmp(&a.growth_long))
                .then(b.count.cmp(&a.count))
                .then(a.id.cmp(&b.id))
        });
        for (rank, group) in groups.iter_mut().filter(|g| g.suspect).enumerate() {
            group.rank = u32::try_from(rank + 1).unwrap_or(u32::MAX);
        }
        groups
    }
}

/// Count now minus the count at the window's start (the newest sample at or before it, or the
/// oldest sample when the history is shorter than the window).
fn growth(history: &VecDeque<(Instant, u64)>, now: Instant, window: Duration) -> i64 {
    let Some(&(_, current)) = history.back() else {
        return 0;
    };
    let start = now.checked_sub(window);
    let base = history
        .iter()
        .rev()
        .find(|(time, _)| start.is_some_and(|start| *time <= start))
        .or(history.front())
        .map_or(current, |&(_, count)| count);
    i64::try_from(current).unwrap_or(i64::MAX) - i64::try_from(base).unwrap_or(i64::MAX)
}

/// Stable across censuses and restarts: FNV-1a of the grouping key.
fn group_id(goroutine: &GoroutineView, blocked: Option<&SourceLocation>) -> String {
    let key = format!(
        "{}|{}|{}|{}",
        goroutine.state,
        goroutine.wait_reason,
        goroutine
            .created_by
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        blocked.map(ToString::to_string).unwrap_or_default(),
    );
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, line: u32) -> StackFrame {
        StackFrame {
            function: function.into(),
            file: "x.go".into(),
            line,
            inlined: false,
            wrapper: false,
            pc: 0,
        }
    }

    fn goroutine(goid: u64, blocked_line: u32) -> GoroutineView {
        GoroutineView {
            goid,
            parent_goid: 1,
            system: false,
            state: "waiting",
            wait_reason: "chan send".into(),
            created_by: Some(SourceLocation {
                function: "main.main".into(),
                file: "main.go".into(),
                line: 10,
            }),
            start_function: Some("main.main.gowrap1".into()),
            stack: vec![
                frame("runtime.gopark", 1),
                frame("runtime.chansend1", 2),
                frame("main.worker", blocked_line),
            ],
            parked_for_s: None,
        }
    }

    #[test]
    fn blocked_at_skips_runtime_and_sync() {
        let stack = vec![
            frame("runtime.gopark", 1),
            frame("sync.runtime_SemacquireMutex", 2),
            frame("internal/sync.(*Mutex).lockSlow", 3),
            frame("sync.(*Mutex).Lock", 4),
            StackFrame {
                wrapper: true,
                ..frame("main.main.gowrap1", 5)
            },
            frame("main.handler", 6),
        ];
        assert_eq!(blocked_at(&stack).map(|l| l.line), Some(6));
    }

    #[test]
    fn a_growing_group_is_a_suspect_and_a_stable_one_is_not() {
        let rules = SuspectRules {
            window_short: Duration::from_secs(10),
            window_long: Duration::from_secs(60),
            min_age: Duration::from_secs(5),
        };
        let mut tracker = GroupTracker::new(rules);
        let start = Instant::now();
        // A stable pool of 8 at line 20, and a leak at line 30 growing by 2 per census.
        let mut leaked = Vec::new();
        let mut groups = Vec::new();
        for step in 0..10u64 {
            let now = start + Duration::from_secs(step * 2);
            let mut census: Vec<GoroutineView> = (0..8).map(|i| goroutine(100 + i, 20)).collect();
            leaked.extend([1000 + 2 * step, 1001 + 2 * step]);
            census.extend(leaked.iter().map(|&goid| goroutine(goid, 30)));
            groups = tracker.update(now, &census);
        }
        let leak = &groups[0];
        assert_eq!(leak.blocked_at.as_ref().map(|l| l.line), Some(30));
        assert!(leak.suspect && leak.rank == 1, "{leak:?}");
        assert_eq!(leak.count, 20);
        assert_eq!(leak.growth_short, 10, "{leak:?}");
        assert_eq!(leak.growth_long, 18, "since the first census");
        assert!((leak.oldest_age_s - 18.0).abs() < 1e-9);
        let pool = &groups[1];
        assert_eq!(
            (
                pool.count,
                pool.growth_short,
                pool.growth_long,
                pool.suspect,
                pool.rank
            ),
            (8, 0, 0, false, 0)
        );
        assert_ne!(leak.id, pool.id);
    }
}
