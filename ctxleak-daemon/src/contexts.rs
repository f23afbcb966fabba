//! The cancel tree of one target's `context`s, kept from probe events, and the goroutines bound
//! to it.
//!
//! Three probes feed it (see `ctxleak-ebpf`): a context is *created* (`propagateCancel`, with
//! the creating goroutine and its creation site), *registered* (it joins a parent's `children`
//! map, where it stays until it is cancelled), and *cancelled* (`(*cancelCtx).cancel`, whatever
//! the path: the owner's cancel func, a deadline, or a parent's cancellation propagating down).
//!
//! # What is kept, and for how long
//! A context is kept while it is registered and not cancelled (that is the leak we count), or
//! while a goroutine is bound to it (to tell, once it is cancelled, which goroutines outlived
//! it). A context that never joined a `children` map (its parent never cancels: `Background`,
//! `WithoutCancel`) cannot leak an entry and the GC may free it: it is forgotten as soon as no
//! goroutine is bound to it, so it costs the daemon nothing. The daemon's memory is therefore
//! bounded by the registered contexts plus one binding per live goroutine.
//!
//! # The binding rule
//! - A goroutine is bound to the last context it created.
//! - A goroutine started by a `go` statement inherits its creator's binding at that moment,
//!   as *inherited*: it was started to do work under that context.
//! - Only inherited bindings give the verdict "outlived its context": a goroutine that created
//!   a context owns it, and owners (a server's connection loop, a retry loop) routinely outlive
//!   the per-iteration contexts they create and cancel.
//! - A goroutine that existed before ctxleak attached, or whose creator had no binding, is not
//!   bound at all and is never reported by this rule (the census still sees it).
//! - Goroutines whose `go` statement is in the standard library (net/http's connection and
//!   transport loops, ...) are not judged: they live as long as a connection or a pool.
//! - `ctx.Done()` is not probed (it runs in every `select` on a context: measured as too costly
//!   for a default probe), so a goroutine that receives a context later, through a channel or
//!   a struct, is not bound to it by these rules. It is seen another way: a goroutine parked on
//!   a tracked context's `Done()` channel *listens on* it (`listeners`, read from memory at
//!   each census). Listeners are shown with the unreleased contexts they wait on; they need no
//!   rule for pool workers, as a cancelled context has no listener left (closing its channel
//!   woke them all) and a worker back on its work channel listens on nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ctxleak_common::{CONTEXT_STACK_DEPTH, ContextEvent, EventKind, GoroutineEvent};

use crate::api::{
    ChildrenCheck, ContextListeners, GOID_SAMPLE, OutlivingGoroutines, ParentChildren,
    SourceLocation, UnreleasedContexts,
};
use crate::groups::GoroutineView;

/// Words of a `cancelCtx` that [`ContextTracker::check_memory`] reads: its parent
/// `Context` (+0, +8), `mu` (+16), `done` (+24, +32), `children` (+40) and `err` (+48).
pub const CONTEXT_WORDS: usize = 7;

/// Where a `cancelCtx`'s done channel is, once `Done()` made it: the data word of its `done`
/// `atomic.Value` (+24, type word first), among the [`CONTEXT_WORDS`].
pub const DONE_CHANNEL_OFFSET: u64 = 32;

/// Index into the [`SiteTable`]. 0 is "unknown" (a context first seen after lost events).
pub type SiteId = u32;

/// Creation sites, interned: contexts store a 4-byte id, not a string.
#[derive(Debug)]
pub struct SiteTable {
    sites: Vec<Option<Arc<SourceLocation>>>,
    ids: HashMap<Arc<SourceLocation>, SiteId>,
    /// A creation stack (as the probe sent it) -> its site: symbolized once per distinct stack.
    by_stack: HashMap<[u64; CONTEXT_STACK_DEPTH], SiteId>,
}

impl Default for SiteTable {
    fn default() -> Self {
        Self {
            sites: vec![None],
            ids: HashMap::new(),
            by_stack: HashMap::new(),
        }
    }
}

impl SiteTable {
    /// The site of a creation stack, symbolizing it with `resolve` the first time it is seen.
    pub fn intern_stack(
        &mut self,
        stack: &[u64; CONTEXT_STACK_DEPTH],
        resolve: impl FnOnce(&[u64]) -> Option<Arc<SourceLocation>>,
    ) -> SiteId {
        if let Some(&id) = self.by_stack.get(stack) {
            return id;
        }
        let id = match resolve(stack) {
            Some(site) => self.intern(site),
            None => 0,
        };
        self.by_stack.insert(*stack, id);
        id
    }

    fn intern(&mut self, site: Arc<SourceLocation>) -> SiteId {
        if let Some(&id) = self.ids.get(&site) {
            return id;
        }
        let id = SiteId::try_from(self.sites.len()).unwrap_or(0);
        self.sites.push(Some(site.clone()));
        self.ids.insert(site, id);
        id
    }

    pub fn get(&self, id: SiteId) -> Option<&Arc<SourceLocation>> {
        self.sites.get(id as usize).and_then(Option::as_ref)
    }
}

/// One tracked context: 48 bytes, as there may be millions of them (see `cargo xtask bench
/// memory`). Keyed by address in [`ContextTracker`]; `generation` tells apart contexts the GC
/// put at the same address, so a binding never follows an address to a newer context.
#[derive(Clone, Copy, Debug)]
struct ContextRecord {
    generation: u32,
    site: SiteId,
    /// Goroutines bound to it.
    bound: u32,
    /// [`REGISTERED`] and [`CANCELLED`].
    flags: u32,
    creator: u64,
    /// The parent's `children` map once registered.
    children_map: u64,
    /// The parent context, as `cancelCtx.Context` holds it: type word (+0) and data word
    /// (+8), folded into one ([`parent_identity`]). While the context lives, its memory says
    /// so; other values there mean the GC freed it and reused the memory
    /// ([`ContextTracker::check_memory`]). Both words count: the data word alone was seen to
    /// match in Swiss-table map groups that took the memory of freed contexts (Go 1.24+).
    parent: u64,
    /// When it was created, until it is cancelled; then when it was cancelled (only bound
    /// contexts are kept once cancelled, and they only need that).
    at_ns: u64,
}

/// A context's parent `Context` (type word, data word) in one word, so that a record stays 48
/// bytes: other words fold to the same value only by coincidence.
fn parent_identity(type_word: u64, data_word: u64) -> u64 {
    data_word ^ type_word.rotate_left(32)
}

/// Whether `word` can be a `cancelCtx`'s `mu` (+16): a `sync.Mutex` is `state int32` (locked,
/// woken and starving bits, then the waiters' count from bit 3) and `sema uint32` (a
/// semaphore's count), each far below 2^24 in any program. Memory the GC gave to something
/// else after the context was freed seldom is: a Swiss-table map group (Go 1.24+) that began
/// with the same two words as the context's parent had its control word there
/// (0x8080808080xxxx80), and was taken for a live context before this check.
fn plausible_mutex(word: u64) -> bool {
    word & 0xff00_0000_ff00_0000 == 0
}

// Millions of them may be kept (`cargo xtask bench memory`; issue #8's goal is 128 bytes per
// context, hash table included).
const _: () = assert!(size_of::<ContextRecord>() == 48);

const REGISTERED: u32 = 1;
const CANCELLED: u32 = 2;

impl ContextRecord {
    fn unreleased(&self) -> bool {
        self.flags == REGISTERED
    }

    fn cancelled(&self) -> bool {
        self.flags & CANCELLED != 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Binding {
    context: u64,
    generation: u32,
    inherited: bool,
}

/// A context still registered and not cancelled, as the verdicts see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreleased {
    /// Where the context is in the target.
    pub address: u64,
    pub site: SiteId,
    pub creator: u64,
    pub created_ns: u64,
}

/// A live goroutine bound (by inheritance) to a cancelled context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundToCancelled {
    pub goid: u64,
    pub context_site: SiteId,
    pub cancelled_ns: u64,
}

#[derive(Debug, Default)]
pub struct ContextTracker {
    /// Address -> the context there now.
    records: HashMap<u64, ContextRecord>,
    /// Cancelled contexts the GC freed (their address now holds a newer context) while
    /// goroutines were still bound to them, by (address, generation): those goroutines still
    /// outlived them. Emptied as the goroutines exit.
    retired: HashMap<(u64, u32), ContextRecord>,
    /// Goroutine -> the context it is bound to.
    bindings: HashMap<u64, Binding>,
    /// Children map -> how many tracked contexts are registered in it.
    children: HashMap<u64, u32>,
    next_generation: u32,
    pub sites: SiteTable,
    pub created: u64,
    pub cancelled: u64,
    /// When [`ContextTracker::check_memory`] last read every uncancelled context (the probes'
    /// clock): those it did not find cancelled were uncancelled then, not necessarily now.
    pub memory_checked_ns: Option<u64>,
}

impl ContextTracker {
    /// Applies one context event, received (drained from the ring) at `received_ns` on the
    /// monotonic clock, which stands for when it happened; `resolve` turns a creation stack
    /// into the user's call site.
    pub fn apply(
        &mut self,
        event: &ContextEvent,
        received_ns: u64,
        resolve: impl FnOnce(&[u64]) -> Option<Arc<SourceLocation>>,
    ) {
        match EventKind::from_u32(event.change.kind) {
            Some(EventKind::ContextCreated) => {
                self.created += 1;
                let site = self.sites.intern_stack(&event.stack, resolve);
                // The GC freed whatever lived here before. A registered one was cancelled
                // (it can't be freed while its parent's map holds it, unless the parent went
                // too), though its cancellation was not seen yet (read from memory, every
                // second): [`ContextTracker::cancel_freed`], as of now. A cancelled one with
                // goroutines still bound is retired, not forgotten: those goroutines outlived
                // it all the same. Any other binding can never match a verdict now (a freed
                // context is never cancelled).
                self.cancel_freed(event.change.context, received_ns);
                if let Some(old) = self.records.remove(&event.change.context)
                    && old.cancelled()
                    && old.bound > 0
                {
                    self.retired
                        .insert((event.change.context, old.generation), old);
                }
                let generation = self.next_generation;
                self.next_generation = self.next_generation.wrapping_add(1);
                self.records.insert(
                    event.change.context,
                    ContextRecord {
                        generation,
                        site,
                        bound: 0,
                        flags: 0,
                        creator: event.goid,
                        children_map: 0,
                        parent: parent_identity(event.parent_type, event.change.detail),
                        at_ns: received_ns,
                    },
                );
                self.bind(
                    event.goid,
                    Binding {
                        context: event.change.context,
                        generation,
                        inherited: false,
                    },
                );
            }
            Some(EventKind::ContextRegistered) => {
                // A context ctxleak never saw created (made before it attached, or after lost
                // events) is not tracked.
                let Some(record) = self.records.get_mut(&event.change.context) else {
                    return;
                };
                if record.flags == 0 {
                    record.flags = REGISTERED;
                    record.children_map = event.change.detail;
                    *self.children.entry(event.change.detail).or_default() += 1;
                }
            }
            Some(EventKind::ContextCancelled) => {
                self.cancelled += 1;
                self.cancel(event.change.context, received_ns);
            }
            _ => {}
        }
    }

    /// Marks the context at `address` cancelled at `at_ns`, unless it is already.
    fn cancel(&mut self, address: u64, at_ns: u64) {
        let Some(record) = self.records.get_mut(&address) else {
            return;
        };
        if record.cancelled() {
            return; // Cancelled again (a deferred cancel after the parent's).
        }
        let was_unreleased = record.unreleased();
        record.flags |= CANCELLED;
        record.at_ns = at_ns;
        let map = record.children_map;
        if was_unreleased {
            self.leave_map(map);
        }
        self.forget_if_unused(address);
    }

    /// The GC freed the context at `address` before its cancellation was seen: a registered
    /// one can only have left its parent's `children` map by a cancellation (unless the
    /// parent went too), so it counts as cancelled as of `at_ns`, and the goroutines bound
    /// to it outlived it.
    fn cancel_freed(&mut self, address: u64, at_ns: u64) {
        if self
            .records
            .get(&address)
            .is_some_and(ContextRecord::unreleased)
        {
            self.cancelled += 1;
            self.cancel(address, at_ns);
        }
    }

    /// Reads from the target's memory what the probes could not say while they were off:
    /// each tracked context not known cancelled is cancelled if its `err` (+48) is set (a
    /// cancelled `cancelCtx` has it, in every Go release: an `error` up to 1.24, an
    /// `atomic.Value` from 1.25, non-zero first word either way), as of `now_ns`; and gone if
    /// its memory no longer holds it (unreadable, or another parent at +8: the GC freed it
    /// and reused the memory; a context still in a parent's `children` map cannot be freed,
    /// so a registered one was released, and counts as cancelled). `read` reads
    /// [`CONTEXT_WORDS`] words at an address. Returns (cancelled, gone).
    ///
    /// A context freed and reused by another with the same parent before the read looks
    /// alive: while the creation probe is on, that creation replaces it first; while it is
    /// off, the context counts as unreleased until the newer one is cancelled.
    pub fn check_memory(
        &mut self,
        now_ns: u64,
        read: impl FnOnce(&[u64]) -> Vec<Option<[u64; CONTEXT_WORDS]>>,
    ) -> (u64, u64) {
        let addresses: Vec<u64> = self
            .records
            .iter()
            .filter(|(_, record)| !record.cancelled())
            .map(|(&address, _)| address)
            .collect();
        let words = read(&addresses);
        self.memory_checked_ns = Some(now_ns);
        let (mut cancelled, mut gone) = (0, 0);
        for (address, words) in addresses.into_iter().zip(words) {
            let Some(record) = self.records.get(&address) else {
                continue;
            };
            match words {
                Some(words)
                    if parent_identity(words[0], words[1]) == record.parent
                        && plausible_mutex(words[2]) =>
                {
                    if words[6] == 0 {
                        continue;
                    }
                    cancelled += 1;
                    self.cancelled += 1;
                    self.cancel(address, now_ns);
                }
                _ => {
                    gone += 1;
                    self.cancel_freed(address, now_ns);
                    if let Some(record) = self.records.remove(&address)
                        && record.cancelled()
                        && record.bound > 0
                    {
                        self.retired.insert((address, record.generation), record);
                    }
                }
            }
        }
        (cancelled, gone)
    }

    /// A goroutine event: a new goroutine inherits its creator's binding; an exited one
    /// releases its own.
    pub fn apply_goroutine(&mut self, event: &GoroutineEvent) {
        match EventKind::from_u32(event.header.kind) {
            Some(EventKind::Created) => {
                if let Some(&creator) = self.bindings.get(&event.parent_goid) {
                    self.bind(
                        event.header.goid,
                        Binding {
                            inherited: true,
                            ..creator
                        },
                    );
                }
            }
            Some(EventKind::Exited) => self.unbind(event.header.goid),
            _ => {}
        }
    }

    /// Drops the bindings of goroutines that are gone (their exit event was lost): `alive`
    /// says which goids the census saw.
    pub fn retain_goroutines(&mut self, alive: impl Fn(u64) -> bool) {
        let gone: Vec<u64> = self
            .bindings
            .keys()
            .copied()
            .filter(|&goid| !alive(goid))
            .collect();
        for goid in gone {
            self.unbind(goid);
        }
    }

    /// The record a binding refers to, if that context is still tracked (at its address, or
    /// retired).
    fn bound_record(&self, binding: &Binding) -> Option<&ContextRecord> {
        self.records
            .get(&binding.context)
            .filter(|record| record.generation == binding.generation)
            .or_else(|| self.retired.get(&(binding.context, binding.generation)))
    }

    fn bound_record_mut(&mut self, binding: &Binding) -> Option<&mut ContextRecord> {
        match self.records.get_mut(&binding.context) {
            Some(record) if record.generation == binding.generation => Some(record),
            _ => self.retired.get_mut(&(binding.context, binding.generation)),
        }
    }

    fn bind(&mut self, goid: u64, binding: Binding) {
        if let Some(record) = self.bound_record_mut(&binding) {
            record.bound += 1;
        }
        if let Some(previous) = self.bindings.insert(goid, binding) {
            self.release(previous);
        }
    }

    fn unbind(&mut self, goid: u64) {
        if let Some(previous) = self.bindings.remove(&goid) {
            self.release(previous);
        }
    }

    fn release(&mut self, binding: Binding) {
        if let Some(record) = self.bound_record_mut(&binding) {
            record.bound = record.bound.saturating_sub(1);
            if record.bound == 0 {
                self.retired.remove(&(binding.context, binding.generation));
            }
            self.forget_if_unused(binding.context);
        }
    }

    /// Forgets a context nobody can ask about any more: not holding a `children` entry and
    /// with no goroutine bound to it.
    fn forget_if_unused(&mut self, address: u64) {
        if self
            .records
            .get(&address)
            .is_some_and(|record| record.bound == 0 && !record.unreleased())
        {
            self.records.remove(&address);
        }
    }

    fn leave_map(&mut self, map: u64) {
        if let Some(count) = self.children.get_mut(&map) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.children.remove(&map);
            }
        }
    }

    /// Every registered, not cancelled context.
    pub fn unreleased(&self) -> impl Iterator<Item = Unreleased> + '_ {
        self.records
            .iter()
            .filter(|(_, record)| record.unreleased())
            .map(|(&address, record)| Unreleased {
                address,
                site: record.site,
                creator: record.creator,
                created_ns: record.at_ns,
            })
    }

    /// Where the context at `address` was created, if it is unreleased and was created at or
    /// before `created_before_ns` (older than the grace period).
    /// Until when the contexts not known cancelled are known uncancelled (see
    /// [`Inputs::alive_as_of_ns`]): `now_ns`, or when cancellations come from memory
    /// (`from_memory`), the last read of it (0 before the first).
    pub fn alive_as_of(&self, now_ns: u64, from_memory: bool) -> u64 {
        if from_memory {
            self.memory_checked_ns.unwrap_or(0).min(now_ns)
        } else {
            now_ns
        }
    }

    pub fn unreleased_site(
        &self,
        address: u64,
        created_before_ns: u64,
    ) -> Option<&Arc<SourceLocation>> {
        self.records
            .get(&address)
            .filter(|record| record.unreleased() && record.at_ns <= created_before_ns)
            .and_then(|record| self.sites.get(record.site))
    }

    /// Live goroutines bound by inheritance to a context cancelled at or before
    /// `cancelled_before_ns`.
    pub fn bound_to_cancelled(
        &self,
        cancelled_before_ns: u64,
    ) -> impl Iterator<Item = BoundToCancelled> + '_ {
        self.bindings.iter().filter_map(move |(&goid, binding)| {
            let record = self.bound_record(binding)?;
            (binding.inherited && record.cancelled() && record.at_ns <= cancelled_before_ns)
                .then_some(BoundToCancelled {
                    goid,
                    context_site: record.site,
                    cancelled_ns: record.at_ns,
                })
        })
    }

    /// Children maps with tracked registered contexts, and how many each holds by our count.
    pub fn children_maps(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.children.iter().map(|(&map, &count)| (map, count))
    }

    /// Contexts kept in memory (retired ones included), and bindings.
    pub fn sizes(&self) -> (usize, usize) {
        (self.records.len() + self.retired.len(), self.bindings.len())
    }
}

/// Counts over time for one verdict, sampled at each census, to report growth.
#[derive(Debug, Default)]
pub struct History {
    samples: HashMap<String, VecDeque<(std::time::Instant, u64)>>,
}

impl History {
    /// Records `count` for `key` at `now` and returns the growth since `window` ago (or since
    /// the first sample, when younger), and how many seconds that covers.
    pub fn growth(
        &mut self,
        key: &str,
        now: std::time::Instant,
        count: u64,
        window: std::time::Duration,
    ) -> (i64, u64) {
        let samples = self.samples.entry(key.to_owned()).or_default();
        samples.push_back((now, count));
        while samples.len() > 1
            && samples
                .get(1)
                .is_some_and(|&(at, _)| now.duration_since(at) >= window)
        {
            samples.pop_front();
        }
        let (first_at, first) = samples.front().copied().unwrap_or((now, count));
        (
            count as i64 - first as i64,
            now.duration_since(first_at).as_secs(),
        )
    }

    /// Forgets keys not in `keep` (verdicts that disappeared).
    pub fn retain(&mut self, keep: &HashSet<String>) {
        self.samples.retain(|key, _| keep.contains(key));
    }
}

/// What the verdicts need besides the tracker, at one census.
pub struct Inputs<'a> {
    /// Monotonic now (the probes' clock).
    pub now_ns: u64,
    /// Until when the contexts not known cancelled are known uncancelled: `now_ns` while the
    /// probes see every cancellation, the last read of their memory while cancellations come
    /// from memory ([`ContextTracker::alive_as_of`]). A context is unreleased only if it was
    /// older than the grace period then.
    pub alive_as_of_ns: u64,
    pub grace_ns: u64,
    pub now: std::time::Instant,
    pub window: std::time::Duration,
    /// Whether a goroutine is alive.
    pub is_live: &'a dyn Fn(u64) -> bool,
    /// The census's view of each live goroutine, by goid.
    pub views: &'a HashMap<u64, &'a GoroutineView>,
    /// `len(children)` of a children map, read from the target.
    pub read_len: &'a dyn Fn(u64) -> Option<u64>,
    /// Whether a function is the program's own code (not the standard library's).
    pub is_program_function: &'a dyn Fn(&str) -> bool,
    /// When the probes were not always on: the share of the time they were
    /// ([`crate::api::ProbeState::coverage`]), to estimate totals from the sampled counts.
    pub coverage: Option<f64>,
    /// The goroutines listening on each context (by address), from `listeners`.
    pub listeners: &'a HashMap<u64, Vec<u64>>,
}

impl Inputs<'_> {
    /// Seconds from `ns` (the probes' clock) to now.
    fn seconds_since(&self, ns: u64) -> f64 {
        self.now_ns.saturating_sub(ns) as f64 / 1e9
    }

    /// The estimated total of a sampled `count` ([`crate::api::estimate`]), when sampled.
    fn estimate(&self, count: u64) -> Option<u64> {
        self.coverage
            .and_then(|coverage| crate::api::estimate(count, coverage))
    }
}

#[derive(Debug, Default)]
pub struct Verdicts {
    pub unreleased: Vec<UnreleasedContexts>,
    pub outliving: Vec<OutlivingGoroutines>,
    pub children_check: ChildrenCheck,
}

/// Listening goroutines (by goid) grouped by where they are blocked, most first.
fn listeners_by_line(
    mut goids: Vec<u64>,
    views: &HashMap<u64, &GoroutineView>,
) -> Vec<ContextListeners> {
    goids.sort_unstable();
    goids.dedup();
    // (blocked line, wait reason) -> (count, goid sample)
    type Line<'v> = (Option<SourceLocation>, &'v str);
    let mut by_line: HashMap<Line<'_>, (u64, Vec<u64>)> = HashMap::new();
    for goid in goids {
        let Some(view) = views.get(&goid) else {
            continue;
        };
        let line = crate::groups::blocked_at(&view.stack).map(crate::groups::source_location);
        let entry = by_line.entry((line, &view.wait_reason)).or_default();
        entry.0 += 1;
        if entry.1.len() < GOID_SAMPLE {
            entry.1.push(goid);
        }
    }
    let mut listeners: Vec<ContextListeners> = by_line
        .into_iter()
        .map(
            |((blocked_at, wait_reason), (count, goids))| ContextListeners {
                blocked_at,
                wait_reason: wait_reason.to_owned(),
                count,
                goids,
            },
        )
        .collect();
    listeners.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.blocked_at.cmp(&b.blocked_at))
    });
    listeners
}

/// The verdicts of one census (see the module's documentation for the rules).
pub fn verdicts(tracker: &ContextTracker, history: &mut History, inputs: &Inputs<'_>) -> Verdicts {
    let site = |id: SiteId| tracker.sites.get(id).map(|s| SourceLocation::clone(s));
    let mut keys = HashSet::new();

    // Unreleased children older than the grace period, by creation site: a request's context
    // is registered and uncancelled while the request is in flight, which a busy server
    // always has some of.
    let young = inputs.alive_as_of_ns.saturating_sub(inputs.grace_ns);
    let mut by_site: HashMap<SiteId, (u64, u64, u64)> = HashMap::new();
    let mut listening: HashMap<SiteId, Vec<u64>> = HashMap::new();
    for context in tracker.unreleased().filter(|c| c.created_ns <= young) {
        let entry = by_site.entry(context.site).or_insert((0, 0, u64::MAX));
        entry.0 += 1;
        if !(inputs.is_live)(context.creator) {
            entry.1 += 1;
        }
        entry.2 = entry.2.min(context.created_ns);
        if let Some(goids) = inputs.listeners.get(&context.address) {
            listening
                .entry(context.site)
                .or_default()
                .extend_from_slice(goids);
        }
    }
    let mut unreleased: Vec<UnreleasedContexts> = by_site
        .into_iter()
        .map(|(id, (count, orphaned, oldest))| {
            let key = format!("u{id}");
            let (growth, window_s) = history.growth(&key, inputs.now, count, inputs.window);
            keys.insert(key);
            UnreleasedContexts {
                site: site(id),
                count,
                orphaned,
                oldest_age_s: inputs.seconds_since(oldest),
                growth,
                window_s,
                estimate: inputs.estimate(count),
                listeners: listeners_by_line(
                    listening.remove(&id).unwrap_or_default(),
                    inputs.views,
                ),
            }
        })
        .collect();
    unreleased.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.site.cmp(&b.site)));

    // Goroutines outliving their context, by (go line, context line, state, wait reason).
    let cutoff = inputs.now_ns.saturating_sub(inputs.grace_ns);
    // (go line, context site, state, wait reason) -> (count, oldest cancellation).
    type Key<'v> = (Option<Arc<SourceLocation>>, SiteId, &'static str, &'v str);
    let mut groups: HashMap<Key<'_>, (u64, u64)> = HashMap::new();
    for bound in tracker.bound_to_cancelled(cutoff) {
        let Some(view) = inputs.views.get(&bound.goid) else {
            continue; // Created after the census read: judged at the next one.
        };
        // Goroutines the standard library starts (net/http's connection and transport loops)
        // live as long as a connection or a pool, not as long as the context that happened to
        // be current when they started: judging them would only cry wolf.
        if !view
            .created_by
            .as_ref()
            .is_some_and(|site| (inputs.is_program_function)(&site.function))
        {
            continue;
        }
        let entry = groups
            .entry((
                view.created_by.clone(),
                bound.context_site,
                view.state,
                &view.wait_reason,
            ))
            .or_insert((0, u64::MAX));
        entry.0 += 1;
        entry.1 = entry.1.min(bound.cancelled_ns);
    }
    let mut outliving: Vec<OutlivingGoroutines> = groups
        .into_iter()
        .map(
            |((go_site, context_site, state, wait_reason), (count, oldest))| {
                let goroutine_site = go_site.map(|s| SourceLocation::clone(&s));
                let key = format!("o{goroutine_site:?}{context_site}{state}{wait_reason}");
                let (growth, window_s) = history.growth(&key, inputs.now, count, inputs.window);
                keys.insert(key);
                OutlivingGoroutines {
                    goroutine_site,
                    context_site: site(context_site),
                    state: state.to_owned(),
                    wait_reason: wait_reason.to_owned(),
                    count,
                    oldest_cancelled_s: inputs.seconds_since(oldest),
                    growth,
                    window_s,
                    estimate: inputs.estimate(count),
                }
            },
        )
        .collect();
    outliving.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.goroutine_site.cmp(&b.goroutine_site))
    });
    history.retain(&keys);

    // Self-check: our children per parent against len(parent.children) in memory.
    let mut parents: Vec<ParentChildren> = tracker
        .children_maps()
        .map(|(map, tracked)| ParentChildren {
            children_map: format!("{map:#x}"),
            tracked: u64::from(tracked),
            in_memory: (inputs.read_len)(map),
        })
        .collect();
    parents.sort_by_key(|p| std::cmp::Reverse(p.tracked));
    let mismatch = parents
        .iter()
        .map(|p| p.in_memory.map_or(p.tracked, |m| m.abs_diff(p.tracked)))
        .sum();
    Verdicts {
        unreleased,
        outliving,
        children_check: ChildrenCheck { mismatch, parents },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctxleak_common::{ContextChange, EventHeader};

    fn site(line: u32) -> Option<Arc<SourceLocation>> {
        Some(Arc::new(SourceLocation {
            function: "main.f".into(),
            file: "main.go".into(),
            line,
        }))
    }

    fn event(kind: EventKind, goid: u64, context: u64, detail: u64, line: u64) -> ContextEvent {
        let mut stack = [0; CONTEXT_STACK_DEPTH];
        stack[0] = line;
        ContextEvent {
            change: ContextChange {
                kind: kind as u32,
                pid: 1,
                context,
                detail,
            },
            goid,
            parent_type: 0x77,
            stack,
        }
    }

    fn goroutine(kind: EventKind, goid: u64, parent: u64) -> GoroutineEvent {
        GoroutineEvent {
            header: EventHeader {
                kind: kind as u32,
                goid,
                ..EventHeader::default()
            },
            parent_goid: parent,
            ..GoroutineEvent::default()
        }
    }

    fn create(t: &mut ContextTracker, goid: u64, context: u64, line: u64) {
        t.apply(
            &event(EventKind::ContextCreated, goid, context, 0, line),
            1000 + context,
            |s| site(s[0] as u32),
        );
    }

    #[test]
    fn registered_until_cancelled_and_unregistered_forgotten() {
        let mut t = ContextTracker::default();
        create(&mut t, 7, 0x100, 10);
        t.apply(
            &event(EventKind::ContextRegistered, 7, 0x100, 0xaa, 0),
            1000 + 0x100,
            |_| None,
        );
        create(&mut t, 7, 0x200, 20); // under Background: never registered
        // 0x100 stays (registered); 0x200 is kept while goroutine 7 is bound to it.
        assert_eq!(t.unreleased().count(), 1);
        assert_eq!(t.sizes(), (2, 1));
        t.apply_goroutine(&goroutine(EventKind::Exited, 7, 0));
        assert_eq!(t.sizes(), (1, 0), "the unregistered context is forgotten");
        assert_eq!(t.children_maps().collect::<Vec<_>>(), vec![(0xaa, 1)]);
        t.apply(
            &event(EventKind::ContextCancelled, 9, 0x100, 0, 0),
            1000 + 0x100,
            |_| None,
        );
        assert_eq!(t.unreleased().count(), 0);
        assert_eq!(t.sizes(), (0, 0));
        assert_eq!(t.children_maps().count(), 0);
    }

    #[test]
    fn inherited_bindings_outlive_cancellation_owners_do_not() {
        let mut t = ContextTracker::default();
        t.apply_goroutine(&goroutine(EventKind::Created, 5, 1)); // unbound creator: no binding
        create(&mut t, 1, 0x100, 10);
        t.apply_goroutine(&goroutine(EventKind::Created, 6, 1)); // inherits 0x100
        t.apply(
            &event(EventKind::ContextCancelled, 1, 0x100, 1, 0),
            1000 + 0x100,
            |_| None,
        );
        let outliving: Vec<_> = t.bound_to_cancelled(u64::MAX).collect();
        assert_eq!(outliving.len(), 1);
        assert_eq!(outliving[0].goid, 6);
        assert_eq!(
            t.bound_to_cancelled(1000).count(),
            0,
            "within the grace period"
        );
        t.apply_goroutine(&goroutine(EventKind::Exited, 6, 0));
        assert_eq!(t.bound_to_cancelled(u64::MAX).count(), 0);
    }

    #[test]
    fn address_reuse_does_not_confuse_bindings() {
        let mut t = ContextTracker::default();
        create(&mut t, 1, 0x100, 10);
        t.apply_goroutine(&goroutine(EventKind::Created, 2, 1));
        create(&mut t, 3, 0x100, 30); // the GC reused the address
        t.apply(
            &event(EventKind::ContextCancelled, 3, 0x100, 1, 0),
            1000 + 0x100,
            |_| None,
        );
        // Goroutine 2 was bound to the old context, which was never cancelled.
        assert!(t.bound_to_cancelled(u64::MAX).all(|b| b.goid != 2));
    }

    #[test]
    fn a_goroutine_outlives_its_context_after_the_gc_reused_the_address() {
        let mut t = ContextTracker::default();
        create(&mut t, 1, 0x100, 10); // a request's context
        t.apply_goroutine(&goroutine(EventKind::Created, 2, 1)); // its handler's goroutine
        t.apply(
            &event(EventKind::ContextCancelled, 1, 0x100, 0, 0),
            1000 + 0x100,
            |_| None,
        );
        create(&mut t, 1, 0x100, 10); // the next request's, where the GC freed the first
        let outliving: Vec<_> = t.bound_to_cancelled(u64::MAX).collect();
        assert_eq!(outliving.len(), 1, "{outliving:?}");
        assert_eq!(outliving[0].goid, 2);
        assert_eq!(t.sizes(), (2, 2));
        t.apply_goroutine(&goroutine(EventKind::Exited, 2, 0));
        assert_eq!(t.bound_to_cancelled(u64::MAX).count(), 0);
        assert_eq!(
            t.sizes(),
            (1, 1),
            "the retired context goes with its last goroutine"
        );
    }

    /// A creation under parent `parent` (the event's detail), registered in map 0xaa.
    fn create_registered(t: &mut ContextTracker, goid: u64, context: u64, parent: u64) {
        t.apply(
            &event(EventKind::ContextCreated, goid, context, parent, 10),
            1000,
            |s| site(s[0] as u32),
        );
        t.apply(
            &event(EventKind::ContextRegistered, goid, context, 0xaa, 0),
            1000,
            |_| None,
        );
    }

    #[test]
    fn releases_the_probes_missed_are_read_from_memory() {
        let mut t = ContextTracker::default();
        create_registered(&mut t, 1, 0x100, 0x900); // still registered in memory
        create_registered(&mut t, 1, 0x200, 0x900); // cancelled: err set
        create_registered(&mut t, 1, 0x300, 0x900); // freed and reused: the parent's type differs
        create_registered(&mut t, 1, 0x400, 0x900); // unmapped
        t.apply_goroutine(&goroutine(EventKind::Created, 2, 1)); // bound to 0x400
        create_registered(&mut t, 1, 0x600, 0x900); // freed and reused: no mutex at +16
        create_registered(&mut t, 1, 0x700, 0x900); // still registered, its mutex contended
        create(&mut t, 1, 0x500, 50); // bound, under Background, still alive
        t.apply_goroutine(&goroutine(EventKind::Created, 3, 1)); // bound to 0x500
        assert_eq!(t.unreleased().count(), 6);
        let memory = |address: u64| -> Option<[u64; CONTEXT_WORDS]> {
            match address {
                0x100 => Some([0x77, 0x900, 0, 0, 0, 0xaa, 0]),
                0x200 => Some([0x77, 0x900, 0, 0, 0, 0xaa, 0x55]),
                // The data word matches, not the type word: a Swiss-table map group (Go 1.24+)
                // was seen to take a freed context's memory so.
                0x300 => Some([0, 0x900, 0x8080_8080_8080_8080, 0, 0, 0, 0]),
                // Both words match, but the third is no mutex: a Swiss-table control word.
                0x600 => Some([0x77, 0x900, 0x8080_8080_8080_a380, 0, 0, 0, 0]),
                // A locked mutex with waiters is one.
                0x700 => Some([0x77, 0x900, (1 << 32) | (3 << 3) | 1, 0, 0, 0xaa, 0]),
                0x500 => Some([0x77, 0, 0, 0, 0, 0, 0]),
                _ => None,
            }
        };
        let (cancelled, gone) = t.check_memory(5000, |addresses| {
            addresses.iter().map(|&a| memory(a)).collect()
        });
        assert_eq!((cancelled, gone), (1, 3));
        assert_eq!(t.unreleased().count(), 2, "0x100 and 0x700 only");
        assert_eq!(t.children_maps().collect::<Vec<_>>(), vec![(0xaa, 2)]);
        // The three registered ones that were freed left their parent's map: cancelled.
        assert_eq!(t.cancelled, 4);
        // Goroutine 3's context is alive; goroutine 2's was registered and is gone, so it
        // was cancelled: goroutine 2 outlived it, as of the check.
        let outliving: Vec<_> = t.bound_to_cancelled(u64::MAX).collect();
        assert_eq!(outliving.len(), 1);
        assert_eq!((outliving[0].goid, outliving[0].cancelled_ns), (2, 5000));
        // A bound context found cancelled in memory gives the verdict, as of the check.
        let (cancelled, _) = t.check_memory(6000, |addresses| {
            addresses
                .iter()
                .map(|&a| match a {
                    0x500 => Some([0x77, 0, 0, 0, 0, 0, 0x55]),
                    a => memory(a),
                })
                .collect()
        });
        assert_eq!(cancelled, 1);
        let mut outliving: Vec<_> = t
            .bound_to_cancelled(u64::MAX)
            .map(|o| (o.goid, o.cancelled_ns))
            .collect();
        outliving.sort_unstable();
        assert_eq!(outliving, vec![(2, 5000), (3, 6000)]);
    }

    /// When [`judge`] judges (the probes' clock).
    const JUDGED_AT: u64 = 10_000;

    /// The verdicts at [`JUDGED_AT`] of contexts known uncancelled until `alive_as_of_ns`,
    /// every goroutine live, every function the program's.
    fn judge(
        t: &ContextTracker,
        alive_as_of_ns: u64,
        grace_ns: u64,
        views: &HashMap<u64, &GoroutineView>,
        listeners: &HashMap<u64, Vec<u64>>,
    ) -> Verdicts {
        verdicts(
            t,
            &mut History::default(),
            &Inputs {
                now_ns: JUDGED_AT,
                alive_as_of_ns,
                grace_ns,
                now: std::time::Instant::now(),
                window: std::time::Duration::from_secs(60),
                is_live: &|_| true,
                views,
                read_len: &|_| None,
                is_program_function: &|_| true,
                coverage: None,
                listeners,
            },
        )
    }

    /// A registered context whose address a new context takes was cancelled (it could not
    /// be freed while in its parent's map), even before a read of memory said so: a goroutine
    /// bound to it outlived it.
    #[test]
    fn a_registered_context_reused_before_its_cancel_was_read_was_cancelled() {
        let mut t = ContextTracker::default();
        create_registered(&mut t, 1, 0x100, 0x900);
        t.apply_goroutine(&goroutine(EventKind::Created, 2, 1)); // bound to 0x100
        create(&mut t, 3, 0x100, 60);
        let outliving: Vec<_> = t.bound_to_cancelled(u64::MAX).map(|o| o.goid).collect();
        assert_eq!(outliving, vec![2]);
        assert_eq!(t.cancelled, 1);
        assert_eq!(t.unreleased().count(), 0);
    }

    /// While cancellations come from memory, a context is unreleased only if it was older than
    /// the grace period at the last read that found it uncancelled: one cancelled since, but
    /// not read yet, is not reported in between.
    #[test]
    fn contexts_read_from_memory_are_unreleased_once_old_at_a_read() {
        let mut t = ContextTracker::default();
        create_registered(&mut t, 1, 0x100, 0x900); // at 1 000 ns
        let alive = |_: &[u64]| vec![Some([0x77, 0x900, 0, 0, 0, 0xaa, 0])];
        let unreleased = |t: &ContextTracker, from_memory: bool| {
            let alive_as_of_ns = t.alive_as_of(JUDGED_AT, from_memory);
            judge(t, alive_as_of_ns, 2_500, &HashMap::new(), &HashMap::new())
                .unreleased
                .iter()
                .map(|u| u.count)
                .sum::<u64>()
        };
        assert_eq!(unreleased(&t, true), 0, "no read yet");
        assert_eq!(
            unreleased(&t, false),
            1,
            "the probe would have seen a cancel"
        );
        t.check_memory(3_000, alive);
        assert_eq!(
            unreleased(&t, true),
            0,
            "2 000 ns old at the read: within the grace"
        );
        t.check_memory(4_000, alive);
        assert_eq!(
            unreleased(&t, true),
            1,
            "3 000 ns old and uncancelled at the read"
        );
    }

    #[test]
    fn listeners_are_shown_with_their_unreleased_contexts_by_blocked_line() {
        let mut t = ContextTracker::default();
        create_registered(&mut t, 1, 0x100, 0x900);
        create_registered(&mut t, 1, 0x200, 0x900);
        create_registered(&mut t, 1, 0x300, 0x900);
        t.apply(
            &event(EventKind::ContextCancelled, 1, 0x300, 0, 0),
            1000,
            |_| None,
        );
        let view = |goid: u64, line: u32| GoroutineView {
            goid,
            parent_goid: 1,
            system: false,
            state: "waiting",
            wait_reason: "select".into(),
            created_by: None,
            start_function: None,
            stack: vec![crate::groups::StackFrame {
                function: "main.waiter".into(),
                file: "main.go".into(),
                line,
                inlined: false,
                wrapper: false,
                pc: 0,
            }]
            .into(),
            parked_for_s: None,
            still: true,
            stack_read: false,
            listens_on: None,
            waitsince: 0,
            runtime_blocked_for_s: None,
        };
        let views = [view(7, 40), view(8, 40), view(9, 50), view(10, 40)];
        let by_goid: HashMap<u64, &GoroutineView> = views.iter().map(|v| (v.goid, v)).collect();
        // Goroutine 10 waits on a cancelled context: not a listener of an unreleased one.
        let listeners = HashMap::from([(0x100, vec![8, 7]), (0x200, vec![9]), (0x300, vec![10])]);
        let verdicts = judge(&t, JUDGED_AT, 0, &by_goid, &listeners);
        let [unreleased] = &verdicts.unreleased[..] else {
            panic!("{:?}", verdicts.unreleased);
        };
        assert_eq!(unreleased.count, 2);
        let found: Vec<(u32, u64, Vec<u64>)> = unreleased
            .listeners
            .iter()
            .map(|l| {
                let line = l.blocked_at.as_ref().map_or(0, |site| site.line);
                (line, l.count, l.goids.clone())
            })
            .collect();
        assert_eq!(found, vec![(40, 2, vec![7, 8]), (50, 1, vec![9])]);
        assert!(
            crate::report::listeners_summary(&unreleased.listeners[0]).starts_with(
                "2 goroutines wait on it at main.waiter (main.go:40) (select; goroutines 7, 8)"
            )
        );
    }

    #[test]
    fn growth_over_a_window() {
        let mut h = History::default();
        let t0 = std::time::Instant::now();
        let w = std::time::Duration::from_secs(10);
        assert_eq!(h.growth("a", t0, 5, w), (0, 0));
        assert_eq!(
            h.growth("a", t0 + std::time::Duration::from_secs(5), 8, w),
            (3, 5)
        );
        assert_eq!(
            h.growth("a", t0 + std::time::Duration::from_secs(20), 9, w),
            (1, 15)
        );
    }
}
