//! The live goroutine set of one target, kept from probe events and memory snapshots.
//!
//! Events and snapshots race: a goroutine can be created after the probes are attached but
//! before the snapshot is read, or exit in between. Each snapshot is stamped with the
//! monotonic clock (the one `bpf_ktime_get_ns` reads) just before `allgs` is read; a creation
//! event older than the snapshot is already reflected in it (the goroutine is in it if still
//! alive) and is not applied again, while exits are always applied. An exit applied shortly
//! before a later snapshot can still see its g as running (the g turns dead a moment after
//! `goexit1`), so recent exits are remembered and kept out of snapshots: goids are never
//! reused. This makes the count exact whatever the interleaving, and a resnapshot after lost
//! events restores exactness.

use std::collections::{HashMap, HashSet, VecDeque};

use ctxleak_common::{EventKind, GoroutineEvent};

use crate::census::GoroutineRecord;
use crate::goexe::GoBinary;

/// User goroutines are what `runtime.NumGoroutine()` counts; system goroutines are the
/// runtime's own (GC workers, the finalizer goroutine, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GoroutineKind {
    User,
    System,
}

/// Whether a goroutine whose function is `name` is a runtime system goroutine, by the rule of
/// the runtime's own `isSystemGoroutine(gp, false)`: its start function is in package runtime,
/// except `runtime.main` (the main goroutine), `runtime.corostart` (coroutines, user code) and
/// `runtime.handleAsyncEvent` (wasm). An unknown function is a user goroutine, as there.
pub fn kind_of_function(name: Option<&str>) -> GoroutineKind {
    match name {
        Some("runtime.main" | "runtime.corostart" | "runtime.handleAsyncEvent") | None => {
            GoroutineKind::User
        }
        Some(name) if name.starts_with("runtime.") => GoroutineKind::System,
        Some(_) => GoroutineKind::User,
    }
}

/// The kind of a goroutine that starts at `startpc` in a process whose code is loaded `bias`
/// above `binary`'s link-time addresses: its start function, looked up in the pclntab, by
/// [`kind_of_function`]'s rule. How the daemon classifies every goroutine it learns of.
pub fn kind_of_start(binary: &GoBinary, bias: u64, startpc: u64) -> GoroutineKind {
    kind_of_function(
        binary
            .function_name_at(startpc.wrapping_sub(bias))
            .as_deref(),
    )
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub user: u64,
    pub system: u64,
}

/// How long an exit is remembered: far longer than a g takes to turn dead after `goexit1`.
const RECENT_EXIT_NS: u64 = 2_000_000_000;

/// A goroutine on which a census and the probe events disagreed (an event was missed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disagreement {
    /// Alive in two censuses in a row, and no creation event came for it.
    CreationMissed { goid: u64 },
    /// Alive by the events (created at `created_ktime`; 0 if first seen in a snapshot), and
    /// absent from a census read after that: its exit event never came.
    ExitMissed { goid: u64, created_ktime: u64 },
}

/// A live goroutine's kind and creation time in one word (the kind in the top bit, which no
/// monotonic time in nanoseconds reaches): 16 bytes an entry of the live set rather than 24,
/// which a million goroutines feel.
#[derive(Clone, Copy, Debug)]
struct Live(u64);

impl Live {
    const SYSTEM: u64 = 1 << 63;

    fn new(kind: GoroutineKind, created_ktime: u64) -> Self {
        let kind = match kind {
            GoroutineKind::User => 0,
            GoroutineKind::System => Self::SYSTEM,
        };
        Self(created_ktime & !Self::SYSTEM | kind)
    }

    fn kind(self) -> GoroutineKind {
        if self.0 & Self::SYSTEM == 0 {
            GoroutineKind::User
        } else {
            GoroutineKind::System
        }
    }

    fn created(self) -> u64 {
        self.0 & !Self::SYSTEM
    }
}

#[derive(Debug, Default)]
pub struct GoroutineTracker {
    /// goid -> kind and creation time (0 for goroutines first seen in a snapshot).
    live: HashMap<u64, Live>,
    counts: Counts,
    /// Monotonic time of the last snapshot.
    snapshot_ktime: u64,
    /// Goroutines the last census saw that no event had created. The runtime makes a new
    /// goroutine visible (runnable, in allgs) inside newproc1, a moment before the creation
    /// probe fires after it, so a census can see one whose event is still to come: it is a
    /// miss only if the next census still finds it unknown.
    unconfirmed: HashSet<u64>,
    /// (ktime, goid) of exits within [`RECENT_EXIT_NS`] of the newest one.
    recent_exits: VecDeque<(u64, u64)>,
    /// The highest goid seen, by events or snapshots: goids are handed out in increasing
    /// order, so its growth between two snapshots bounds the goroutines created meanwhile.
    goid_high: u64,
    pub created: u64,
    pub exited: u64,
}

impl GoroutineTracker {
    /// Replaces the live set with a snapshot read after `ktime_ns`.
    pub fn reset(
        &mut self,
        ktime_ns: u64,
        goroutines: &[GoroutineRecord],
        classify: impl Fn(u64) -> GoroutineKind,
    ) {
        self.live.clear();
        self.unconfirmed.clear();
        self.counts = Counts::default();
        self.snapshot_ktime = ktime_ns;
        let exited: HashSet<u64> = self.recent_exits.iter().map(|&(_, goid)| goid).collect();
        for record in goroutines
            .iter()
            .filter(|record| !exited.contains(&record.goid))
        {
            self.insert(record.goid, classify(record.startpc), 0);
        }
        self.goid_high = self.goid_high.max(
            goroutines
                .iter()
                .map(|record| record.goid)
                .max()
                .unwrap_or(0),
        );
    }

    /// Notes the highest goid of a snapshot's g's, dead ones included (see
    /// [`GoroutineTracker::reset_estimating`]), so that goroutines from before it are not
    /// counted as created after it.
    pub fn saw_goid(&mut self, goid: u64) {
        self.goid_high = self.goid_high.max(goid);
    }

    /// [`GoroutineTracker::reset`] after a time without events (the probes were off): the
    /// goroutines created and exited meanwhile are estimated from the snapshots. Created: how
    /// far the highest goid moved (`high_goid`, the highest in any g of the snapshot, dead
    /// ones included: the runtime hands goids out in order, but in batches of 16 per P, so
    /// this can be off by up to 16 × GOMAXPROCS); exited: whatever the live count does not
    /// account for. `created - exited` stays exactly the change in live goroutines.
    pub fn reset_estimating(
        &mut self,
        ktime_ns: u64,
        goroutines: &[GoroutineRecord],
        high_goid: u64,
        classify: impl Fn(u64) -> GoroutineKind,
    ) {
        let before = self.before_estimate();
        self.reset(ktime_ns, goroutines, classify);
        self.estimate_since(before, high_goid);
    }

    /// The counts alone after a time without events, from the runtime's own arithmetic
    /// ([`crate::gcount`]); the live set is left as it was (the next census replaces it).
    /// Created and exited are estimated as in [`GoroutineTracker::reset_estimating`], from
    /// `goidgen`, the goid allocator: it is ahead of the goids handed out by what the Ps hold
    /// in their caches (up to 16 each), so the estimate too can be ahead by 16 × GOMAXPROCS,
    /// and no more: that much is not counted again later.
    pub fn count_estimating(&mut self, counts: Counts, goidgen: u64) {
        let before = self.before_estimate();
        self.counts = counts;
        self.estimate_since(before, goidgen);
    }

    /// (live goroutines, highest goid) before a count from memory.
    fn before_estimate(&self) -> (u64, u64) {
        (self.counts.user + self.counts.system, self.goid_high)
    }

    /// Adds the goroutines created and exited since `before` ([`Self::before_estimate`]) to
    /// the totals, now that the counts are read again and goids up to `high_goid` handed out.
    fn estimate_since(&mut self, (live_before, high_before): (u64, u64), high_goid: u64) {
        self.goid_high = self.goid_high.max(high_goid);
        let live_after = self.counts.user + self.counts.system;
        let created = self.goid_high.saturating_sub(high_before);
        // live_after = live_before + created - exited, with neither count negative.
        let created = created.max(live_after.saturating_sub(live_before));
        self.created += created;
        self.exited += (live_before + created).saturating_sub(live_after);
    }

    /// Checks the live set against a census read after `ktime_ns`, once every event up to now
    /// has been applied, and repairs it. Returns the number of disagreements: goroutines two
    /// censuses in a row saw alive that the events never created (and that have not exited
    /// since), and goroutines the events say are alive, created before the census, that it
    /// did not see. Either means an event was missed; both are fixed here without touching
    /// the rest. (An exit is never in flight that way: its probe fires before the g turns
    /// dead.)
    pub fn reconcile(
        &mut self,
        ktime_ns: u64,
        goroutines: &[GoroutineRecord],
        classify: impl Fn(u64) -> GoroutineKind,
    ) -> Vec<Disagreement> {
        let exited: HashSet<u64> = self.recent_exits.iter().map(|&(_, goid)| goid).collect();
        let seen: HashSet<u64> = goroutines.iter().map(|record| record.goid).collect();
        let mut disagreements = Vec::new();
        let mut unconfirmed = HashSet::new();
        for record in goroutines {
            if !self.live.contains_key(&record.goid) && !exited.contains(&record.goid) {
                if self.unconfirmed.contains(&record.goid) {
                    disagreements.push(Disagreement::CreationMissed { goid: record.goid });
                    self.insert(record.goid, classify(record.startpc), 0);
                } else {
                    unconfirmed.insert(record.goid);
                }
            }
        }
        self.unconfirmed = unconfirmed;
        let phantoms: Vec<(u64, u64)> = self
            .live
            .iter()
            .filter(|(goid, live)| live.created() < ktime_ns && !seen.contains(goid))
            .map(|(&goid, live)| (goid, live.created()))
            .collect();
        for (goid, created_ktime) in phantoms {
            disagreements.push(Disagreement::ExitMissed {
                goid,
                created_ktime,
            });
            if let Some(live) = self.live.remove(&goid) {
                *self.count_mut(live.kind()) -= 1;
            }
        }
        disagreements
    }

    pub fn apply(&mut self, event: &GoroutineEvent, classify: impl Fn(u64) -> GoroutineKind) {
        match EventKind::from_u32(event.header.kind) {
            Some(EventKind::Created) => {
                self.created += 1;
                self.goid_high = self.goid_high.max(event.header.goid);
                if event.header.ktime_ns >= self.snapshot_ktime {
                    self.insert(
                        event.header.goid,
                        classify(event.startpc),
                        event.header.ktime_ns,
                    );
                }
            }
            Some(EventKind::Exited) => {
                self.exited += 1;
                if let Some(live) = self.live.remove(&event.header.goid) {
                    *self.count_mut(live.kind()) -= 1;
                }
                let horizon = event.header.ktime_ns.saturating_sub(RECENT_EXIT_NS);
                while self
                    .recent_exits
                    .front()
                    .is_some_and(|&(ktime, _)| ktime < horizon)
                {
                    self.recent_exits.pop_front();
                }
                self.recent_exits
                    .push_back((event.header.ktime_ns, event.header.goid));
            }
            // Context events are the context tracker's.
            _ => {}
        }
    }

    /// Whether `goid` is alive by the events and snapshots so far.
    pub fn is_live(&self, goid: u64) -> bool {
        self.live.contains_key(&goid)
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    fn insert(&mut self, goid: u64, kind: GoroutineKind, created_ktime: u64) {
        if self
            .live
            .insert(goid, Live::new(kind, created_ktime))
            .is_none()
        {
            *self.count_mut(kind) += 1;
        }
    }

    fn count_mut(&mut self, kind: GoroutineKind) -> &mut u64 {
        match kind {
            GoroutineKind::User => &mut self.counts.user,
            GoroutineKind::System => &mut self.counts.system,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctxleak_common::EventHeader;

    fn event(kind: EventKind, goid: u64, ktime_ns: u64, startpc: u64) -> GoroutineEvent {
        GoroutineEvent {
            header: EventHeader {
                kind: kind as u32,
                pid: 1,
                ktime_ns,
                goid,
            },
            startpc,
            ..Default::default()
        }
    }

    fn record(goid: u64, startpc: u64) -> GoroutineRecord {
        GoroutineRecord {
            goid,
            status: 4,
            startpc,
            ..GoroutineRecord::default()
        }
    }

    /// startpc 1 is a system goroutine, anything else a user one.
    fn classify(startpc: u64) -> GoroutineKind {
        if startpc == 1 {
            GoroutineKind::System
        } else {
            GoroutineKind::User
        }
    }

    #[test]
    fn classifies_like_the_runtime() {
        assert_eq!(kind_of_function(Some("runtime.main")), GoroutineKind::User);
        assert_eq!(
            kind_of_function(Some("runtime.bgsweep")),
            GoroutineKind::System
        );
        assert_eq!(
            kind_of_function(Some("runtime.gcenable.gowrap1")),
            GoroutineKind::System
        );
        assert_eq!(
            kind_of_function(Some("runtime/trace.Start.func1")),
            GoroutineKind::User
        );
        assert_eq!(
            kind_of_function(Some("main.main.gowrap1")),
            GoroutineKind::User
        );
        assert_eq!(kind_of_function(None), GoroutineKind::User);
    }

    #[test]
    fn snapshot_and_events_agree_whatever_the_interleaving() {
        let mut tracker = GoroutineTracker::default();
        // Snapshot at t=100 holds g1 (main), g2 (system), g5 (created at t=90, event pending).
        tracker.reset(100, &[record(1, 9), record(2, 1), record(5, 9)], classify);
        assert_eq!(tracker.counts(), Counts { user: 2, system: 1 });
        // Pending events from before the snapshot: g5 created (already counted), g6 created and
        // exited (not in the snapshot).
        tracker.apply(&event(EventKind::Created, 5, 90, 9), classify);
        tracker.apply(&event(EventKind::Created, 6, 95, 9), classify);
        tracker.apply(&event(EventKind::Exited, 6, 97, 0), classify);
        assert_eq!(tracker.counts(), Counts { user: 2, system: 1 });
        // g5 exits just before the snapshot read but after the clock: still removed.
        tracker.apply(&event(EventKind::Exited, 5, 99, 0), classify);
        // Later events apply normally.
        tracker.apply(&event(EventKind::Created, 7, 101, 9), classify);
        tracker.apply(&event(EventKind::Created, 8, 102, 1), classify);
        assert_eq!(tracker.counts(), Counts { user: 2, system: 2 });
        tracker.apply(&event(EventKind::Exited, 1, 103, 0), classify);
        tracker.apply(&event(EventKind::Exited, 999, 104, 0), classify);
        assert_eq!(tracker.counts(), Counts { user: 1, system: 2 });
        assert_eq!((tracker.created, tracker.exited), (4, 4));
    }

    #[test]
    fn reconciling_repairs_missed_events_and_only_them() {
        let mut tracker = GoroutineTracker::default();
        tracker.reset(100, &[record(1, 9), record(2, 9)], classify);
        // g3's creation was missed; g2's exit was missed; g4 was created after the census
        // clock (the census could not see it); g5 exited during the census read.
        tracker.apply(&event(EventKind::Created, 4, 210, 9), classify);
        tracker.apply(&event(EventKind::Created, 5, 150, 9), classify);
        tracker.apply(&event(EventKind::Exited, 5, 205, 0), classify);
        let census = [record(1, 9), record(3, 9), record(5, 9)];
        assert_eq!(tracker.reconcile(200, &census, classify).len(), 1, "g2");
        assert_eq!(tracker.counts(), Counts { user: 2, system: 0 }, "g1 and g4");
        // g3 could have been made a moment before the census, its event still to come; the
        // next census still sees it unknown: missed.
        assert_eq!(tracker.reconcile(200, &census, classify).len(), 1, "g3");
        assert_eq!(
            tracker.counts(),
            Counts { user: 3, system: 0 },
            "g1, g3 and g4"
        );
        assert_eq!(
            tracker.reconcile(200, &census, classify).len(),
            0,
            "nothing left to repair"
        );
    }

    #[test]
    fn a_goroutine_whose_creation_event_arrives_after_the_census_is_no_disagreement() {
        let mut tracker = GoroutineTracker::default();
        tracker.reset(100, &[record(1, 9)], classify);
        // The census sees g2 runnable before the probe after newproc1 has fired.
        assert_eq!(
            tracker
                .reconcile(200, &[record(1, 9), record(2, 9)], classify)
                .len(),
            0
        );
        tracker.apply(&event(EventKind::Created, 2, 201, 9), classify);
        assert_eq!(
            tracker
                .reconcile(300, &[record(1, 9), record(2, 9)], classify)
                .len(),
            0
        );
        assert_eq!(tracker.counts(), Counts { user: 2, system: 0 });
    }

    #[test]
    fn a_resnapshot_does_not_revive_a_goroutine_that_just_exited() {
        let mut tracker = GoroutineTracker::default();
        tracker.reset(100, &[record(1, 9), record(3, 9)], classify);
        tracker.apply(&event(EventKind::Exited, 3, 200, 0), classify);
        // The next snapshot still sees g3's g as running: it must stay gone.
        tracker.reset(210, &[record(1, 9), record(3, 9)], classify);
        assert_eq!(tracker.counts(), Counts { user: 1, system: 0 });
    }

    #[test]
    fn counts_without_events_are_estimated_from_goids() {
        let mut tracker = GoroutineTracker::default();
        tracker.reset(100, &[record(1, 9), record(2, 1), record(3, 9)], classify);
        tracker.apply(&event(EventKind::Created, 4, 110, 9), classify);
        assert_eq!((tracker.created, tracker.exited), (1, 0));
        // Probes off: goroutines 5..=20 were created, all but 20 exited, and so did 3.
        // (16 created, 16 exited.)
        tracker.reset_estimating(
            200,
            &[record(1, 9), record(2, 1), record(4, 9), record(20, 9)],
            20,
            classify,
        );
        assert_eq!(tracker.counts(), Counts { user: 3, system: 1 });
        assert_eq!((tracker.created, tracker.exited), (17, 16));
        // 21..=30 came and went: only the dead g's goids show it.
        tracker.reset_estimating(
            250,
            &[record(1, 9), record(2, 1), record(4, 9), record(20, 9)],
            30,
            classify,
        );
        assert_eq!((tracker.created, tracker.exited), (27, 26));
        // Rewind the counts for what follows.
        tracker.created -= 10;
        tracker.exited -= 10;
        assert_eq!(tracker.counts(), Counts { user: 3, system: 1 });
        assert_eq!((tracker.created, tracker.exited), (17, 16));
        // A goroutine from a P's older goid batch (below the highest seen) still counts.
        tracker.reset_estimating(
            300,
            &[
                record(1, 9),
                record(2, 1),
                record(4, 9),
                record(20, 9),
                record(19, 9),
            ],
            30,
            classify,
        );
        assert_eq!(tracker.counts(), Counts { user: 4, system: 1 });
        assert_eq!((tracker.created, tracker.exited), (18, 16));
        assert_eq!(
            tracker.created - tracker.exited,
            5 - 3,
            "live now minus live at start"
        );
    }

    #[test]
    fn counts_from_the_runtime_estimate_from_the_goid_allocator() {
        let mut tracker = GoroutineTracker::default();
        tracker.reset(100, &[record(1, 9), record(2, 1), record(3, 9)], classify);
        tracker.saw_goid(3);
        // Probes off; the runtime counts 5 user goroutines and 1 system one, and has handed
        // goids up to 48 to its Ps.
        let counts = Counts { user: 5, system: 1 };
        tracker.count_estimating(counts, 48);
        assert_eq!(tracker.counts(), counts);
        assert_eq!((tracker.created, tracker.exited), (45, 42));
        // Nothing new: the same allocator, fewer goroutines (they exited).
        tracker.count_estimating(Counts { user: 2, system: 1 }, 48);
        assert_eq!((tracker.created, tracker.exited), (45, 45));
        // A census after it saw goids below the allocator's (held in a P's cache): nothing is
        // counted twice; the live set is the census's again.
        tracker.reset_estimating(
            200,
            &[record(1, 9), record(2, 1), record(40, 9)],
            40,
            classify,
        );
        assert_eq!(tracker.counts(), Counts { user: 2, system: 1 });
        assert_eq!((tracker.created, tracker.exited), (45, 45));
        assert!(tracker.is_live(40) && !tracker.is_live(3));
        // More goroutines than the goids moved (a stale allocator read): created covers them.
        tracker.count_estimating(Counts { user: 6, system: 1 }, 40);
        assert_eq!((tracker.created, tracker.exited), (49, 45));
    }
}
