//! Which goroutines *listen on* a context: parked in a channel receive or a `select` on its
//! `Done()` channel. Read from the target's memory at each census, without a probe.
//!
//! A goroutine parked in `chanrecv` or `selectgo` has its `runtime.sudog`s in memory:
//! `g.waiting` points at the first, `sudog.waitlink` chains the others (`selectgo` makes one
//! per case, `chanrecv` one), and each `sudog.c` is the channel it waits on. A `cancelCtx`'s
//! `done` is an `atomic.Value` at +24 whose data word (+32) is its `chan struct{}` once
//! `Done()` was called, which it must have been before anyone could wait on it. So a goroutine
//! whose sudogs name the done channel of a tracked, unreleased context listens on that context.
//!
//! The binding is current by construction: cancelling a context closes its channel, which
//! wakes every goroutine waiting on it, so a listener of a cancelled context cannot exist. A
//! pool worker that served a request (it listened on the request's context) and went back to
//! its work channel listens on nothing; only a worker still parked on the context's `Done()`
//! is bound to it.
//!
//! Cost: only goroutines whose stack the census read again (they ran since the last census, or
//! every `groups::FULL_READ_EVERY`th census) have their chain read, one batched read per link
//! (at most [`MAX_CHAIN`]); the others keep what the last census found (a goroutine that has not
//! run still waits on the same sudogs). What is kept is one entry per listener. The done
//! channels are one 8-byte read per unreleased context, batched, at each census.
//!
//! Limits: a context whose creation event had not been drained from the ring when the census
//! read a listener's chain is matched only at the next full read; a goroutine that woke between
//! the read of its g and of its sudogs (which the runtime then reuses) may be matched with what
//! is there now until it is read again.

use std::collections::HashMap;

use crate::census::GoroutineRecord;
use crate::goexe::WaitLayout;
use crate::groups::GoroutineView;
use crate::procmem::ProcessMemory;

/// The wait reasons (the runtime's `waitReasonStrings`, the same in Go 1.21-1.27) of a
/// goroutine that may be waiting on a done channel: `<-ctx.Done()` alone, or a `select` with
/// it among its cases.
pub const LISTEN_WAITS: &[&str] = &["chan receive", "select"];

/// The most sudogs followed per goroutine (a `select` has one per case; real ones have a
/// handful, and a chain read mid-change must not be followed forever).
pub const MAX_CHAIN: usize = 16;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The listeners found at the last census, kept for the goroutines not read again.
#[derive(Debug, Default)]
pub struct Listeners {
    /// goid -> the done channel it waits on.
    listening: FastMap<u64, u64>,
}

impl Listeners {
    /// The listeners of one census: goid -> the context it listens on. `records` and `views`
    /// are the census's goroutines, in the same order; `done` gives the done channels of the
    /// tracked unreleased contexts (channel -> context), and is called at most once, when some
    /// goroutine may be listening.
    pub fn update(
        &mut self,
        memory: &ProcessMemory,
        layout: &WaitLayout,
        records: &[GoroutineRecord],
        views: &[GoroutineView],
        done: impl FnOnce() -> HashMap<u64, u64>,
    ) -> HashMap<u64, u64> {
        let mut kept = FastMap::default();
        let mut waiting = Vec::new();
        for (record, view) in records.iter().zip(views) {
            if view.system || !LISTEN_WAITS.contains(&&*view.wait_reason) {
                continue;
            }
            if !view.stack_read {
                if let Some(&channel) = self.listening.get(&record.goid) {
                    kept.insert(record.goid, channel);
                }
            } else if record.waiting != 0 {
                waiting.push((record.goid, record.waiting));
            }
        }
        if waiting.is_empty() && kept.is_empty() {
            self.listening = kept;
            return HashMap::new();
        }
        let done = done();
        if done.is_empty() {
            self.listening = FastMap::default();
            return HashMap::new();
        }
        for (goid, channels) in waiting.iter().map(|&(goid, _)| goid).zip(channels(
            memory,
            layout,
            &waiting.iter().map(|&(_, sudog)| sudog).collect::<Vec<_>>(),
        )) {
            if let Some(channel) = channels.into_iter().find(|c| done.contains_key(c)) {
                kept.insert(goid, channel);
            }
        }
        // A context released since (cancelled: its listeners woke and were read again) binds
        // nobody.
        kept.retain(|_, channel| done.contains_key(channel));
        let listeners = kept
            .iter()
            .filter_map(|(&goid, channel)| Some((goid, *done.get(channel)?)))
            .collect();
        self.listening = kept;
        listeners
    }
}

/// The done channels of the contexts at `contexts` (channel -> context): the data word of
/// each one's `done` ([`crate::contexts::DONE_CHANNEL_OFFSET`]), read in one batch; contexts
/// whose `Done()` was never called (no channel yet) or that cannot be read are left out.
pub fn done_channels(
    memory: &ProcessMemory,
    contexts: impl Iterator<Item = u64>,
) -> HashMap<u64, u64> {
    let contexts: Vec<u64> = contexts.collect();
    let mut buffer = vec![0u8; contexts.len() * 8];
    let read = {
        let mut reads: Vec<(u64, &mut [u8])> = contexts
            .iter()
            .map(|&context| context.saturating_add(crate::contexts::DONE_CHANNEL_OFFSET))
            .zip(buffer.chunks_exact_mut(8))
            .collect();
        memory.read_many(&mut reads)
    };
    contexts
        .iter()
        .zip(buffer.chunks_exact(8))
        .zip(read)
        .filter(|&(_, read)| read)
        .filter_map(|((&context, word), _)| {
            let channel = u64::from_le_bytes(word.try_into().ok()?);
            (channel != 0).then_some((channel, context))
        })
        .collect()
}

/// The channels each chain of sudogs (by its first sudog) waits on, following `waitlink` for
/// at most [`MAX_CHAIN`] links: one batched read per link for all chains.
pub fn channels(memory: &ProcessMemory, layout: &WaitLayout, first: &[u64]) -> Vec<Vec<u64>> {
    let (start, len) = layout.sudog_span();
    let mut found: Vec<Vec<u64>> = vec![Vec::new(); first.len()];
    follow_chains(
        memory,
        first,
        (start, len, layout.sudog_waitlink),
        MAX_CHAIN,
        |chain, _, word| {
            if let Some(channel) = word(layout.sudog_c).filter(|&c| c != 0) {
                found[chain].push(channel);
            }
        },
    );
    found
}

/// Follows linked lists in the target, all at once: from each of `first` (0: an empty list),
/// reads `len` bytes at `start` of each node and goes on to the node at `next` (an offset in
/// the node, within the bytes read), for at most `max` nodes a list, with one batched read
/// per step for all lists. `visit(list, node, word)` sees each node read; `word(offset)` is
/// the 8-byte word at that offset of the node, when it was read. Sudog chains (`waitlink`,
/// here) and channel queues (`sudog.next`, `chans`) both go through it.
pub fn follow_chains(
    memory: &ProcessMemory,
    first: &[u64],
    (start, len, next): (u64, usize, u64),
    max: usize,
    mut visit: impl FnMut(usize, u64, &dyn Fn(u64) -> Option<u64>),
) {
    // (list, node) still to read.
    let mut pending: Vec<(usize, u64)> = first
        .iter()
        .enumerate()
        .filter(|&(_, &node)| node != 0)
        .map(|(list, &node)| (list, node))
        .collect();
    let mut buffer = Vec::new();
    for _ in 0..max {
        if pending.is_empty() {
            break;
        }
        buffer.resize(pending.len() * len, 0);
        let read = {
            let mut reads: Vec<(u64, &mut [u8])> = pending
                .iter()
                .zip(buffer.chunks_exact_mut(len))
                .map(|(&(_, node), bytes)| (node.saturating_add(start), bytes))
                .collect();
            memory.read_many(&mut reads)
        };
        let mut after = Vec::new();
        for ((&(list, node), bytes), read) in pending.iter().zip(buffer.chunks_exact(len)).zip(read)
        {
            if !read {
                continue;
            }
            let word = |offset: u64| {
                let at = usize::try_from(offset.checked_sub(start)?).ok()?;
                Some(u64::from_le_bytes(
                    bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
                ))
            };
            visit(list, node, &word);
            if let Some(link) = word(next).filter(|&l| l != 0) {
                after.push((list, link));
            }
        }
        pending = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go 1.21's.
    const LAYOUT: WaitLayout = WaitLayout {
        g_waiting: 312,
        g_waitsince: 168,
        sudog_c: 80,
        sudog_waitlink: 64,
    };

    /// Sudogs of 96 bytes in this process: a `select` of three cases (0 -> 1 -> 2), a receive
    /// (3), and a chain that loops (4 -> 4).
    fn sudogs() -> Vec<u64> {
        let mut memory = vec![0u64; 5 * 12];
        let base = memory.as_ptr() as u64;
        let address = |i: usize| base + (i * 96) as u64;
        let mut put = |i: usize, channel: u64, link: Option<usize>| {
            memory[i * 12 + 10] = channel;
            memory[i * 12 + 8] = link.map_or(0, address);
        };
        put(0, 0xa0, Some(1));
        put(1, 0xa1, Some(2));
        put(2, 0xa2, None);
        put(3, 0xb0, None);
        put(4, 0xc0, Some(4));
        std::mem::forget(memory);
        (0..5).map(address).collect()
    }

    #[test]
    fn follows_select_chains_and_stops_at_a_loop() {
        let sudog = sudogs();
        let memory = ProcessMemory::open(std::process::id()).unwrap();
        let found = channels(&memory, &LAYOUT, &[sudog[0], sudog[3], 0, sudog[4], 16]);
        assert_eq!(found[0], vec![0xa0, 0xa1, 0xa2]);
        assert_eq!(found[1], vec![0xb0]);
        assert!(found[2].is_empty(), "no sudog");
        assert_eq!(found[3], vec![0xc0; MAX_CHAIN], "bounded");
        assert!(found[4].is_empty(), "unreadable");
    }

    fn view(goid: u64, wait_reason: &str, stack_read: bool) -> GoroutineView {
        GoroutineView {
            goid,
            parent_goid: 1,
            system: false,
            state: "waiting",
            wait_reason: wait_reason.into(),
            created_by: None,
            start_function: None,
            stack: Vec::new().into(),
            parked_for_s: None,
            still: !stack_read,
            stack_read,
            listens_on: None,
            waitsince: 0,
            runtime_blocked_for_s: None,
        }
    }

    #[test]
    fn listeners_are_read_again_only_when_their_stack_was() {
        let sudog = sudogs();
        let memory = ProcessMemory::open(std::process::id()).unwrap();
        let record = |goid, waiting| GoroutineRecord {
            goid,
            waiting,
            ..GoroutineRecord::default()
        };
        let mut listeners = Listeners::default();
        // 0xa1 is context 0x100's done channel, 0xb0 context 0x200's.
        let done = || HashMap::from([(0xa1, 0x100), (0xb0, 0x200)]);
        let records = [
            record(1, sudog[0]),
            record(2, sudog[3]),
            record(3, sudog[3]),
        ];
        let views = [
            view(1, "select", true),
            view(2, "chan receive", true),
            view(3, "sync.Mutex.Lock", true),
        ];
        let found = listeners.update(&memory, &LAYOUT, &records, &views, done);
        assert_eq!(found, HashMap::from([(1, 0x100), (2, 0x200)]));
        // Not read again: the same answer, even from a g whose waiting changed.
        let moved = [record(1, 0), record(2, sudog[0])];
        let views = [view(1, "select", false), view(2, "chan receive", false)];
        let found = listeners.update(&memory, &LAYOUT, &moved, &views, done);
        assert_eq!(found, HashMap::from([(1, 0x100), (2, 0x200)]));
        // Goroutine 2 ran and waits elsewhere; 0x100 was released.
        let views = [view(1, "select", false), view(2, "chan receive", true)];
        let found = listeners.update(&memory, &LAYOUT, &moved, &views, || {
            HashMap::from([(0xb0, 0x200), (0xa2, 0x300)])
        });
        assert_eq!(found, HashMap::from([(2, 0x300)]));
        // Nobody waits: `done` is not even read.
        let views = [view(1, "runnable", true)];
        let found = listeners.update(&memory, &LAYOUT, &moved[..1], &views, || unreachable!());
        assert!(found.is_empty());
    }
}
