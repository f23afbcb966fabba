//! Channel evidence for stuck goroutines: what the channels the members of a stuck group wait
//! on say, read from the target's memory (`runtime.hchan`), to tell a send nobody will ever
//! receive from one that is only slow.
//!
//! For each stuck group blocked on channels, its members' sudog chains are read
//! (`g.waiting`, `sudog.waitlink`, `sudog.c`: [`crate::listeners::follow_chains`], the walk
//! `listeners` uses), then each channel once: `qcount`, `dataqsiz`, `closed`, `sendx`,
//! `recvx`, and its queues of parked goroutines (`recvq`, `sendq`, followed through
//! `sudog.next`, their heads and lengths). Evidence per group ([`ChannelEvidence`]):
//!
//! - **all N wait on one channel**: one channel among the members' sudogs;
//! - **nobody waits on the other side**: no goroutine parked receiving on it (for senders);
//! - **no progress**: since ctxleak first saw it, the channel's state (buffer counters, queue
//!   heads and lengths) has not changed at any census; or the head of its send queue is a
//!   member that has not run for `--stuck-after`. A receive always takes the head of the send
//!   queue when senders wait (from an unbuffered channel, or a full buffer it refills from
//!   the head), so a head that has not run means nothing was received on that channel since.
//!
//! What it strengthens, and what not:
//!
//! - A `chan send` group whose members all wait on one channel, with no receiver parked on
//!   it and no progress for `--stuck-after`, is stuck with **high confidence**
//!   (`confident`): nothing has taken a value from that channel for that long, while its
//!   senders wait.
//! - Receives (`chan receive`, a `select` of receives) are **not** promoted by this evidence
//!   alone: an idle worker pool receiving on one work channel looks exactly like leaked
//!   receivers (all N on one channel, no sender, no progress) until work comes; whether
//!   anyone still holds the channel to send on it is a reachability question memory does not
//!   answer cheaply. Their evidence is shown, their verdict is left to the wait rules.
//!
//! Cost: nothing for a census without stuck groups on channels; otherwise one batched read
//! per sudog link of their members, one of the channels, one per queue link (queues are
//! counted up to [`MAX_QUEUE`]). What is kept between censuses: one entry per channel read.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::api::{ChannelEvidence, Group};
use crate::census::GoroutineRecord;
use crate::goexe::{ChanLayout, WaitLayout};
use crate::listeners::{MAX_CHAIN, follow_chains};
use crate::procmem::ProcessMemory;

/// The longest channel queue counted.
pub const MAX_QUEUE: usize = 1024;

/// The wait reasons (the runtime's `waitReasonStrings`) of a goroutine parked on channels
/// whose sudogs name them.
pub const CHANNEL_WAITS: &[&str] = &["chan send", "chan receive", "select"];

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What one read of a channel found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelState {
    pub qcount: u64,
    pub dataqsiz: u64,
    pub closed: bool,
    pub sendx: u64,
    pub recvx: u64,
    /// The first sudog of each queue (0: empty), and how many are in it (up to [`MAX_QUEUE`]).
    pub recvq_first: u64,
    pub sendq_first: u64,
    pub receivers: u64,
    pub senders: u64,
}

/// Reads the state of each channel (`None`: it could not be read): one batched read of the
/// hchans, then one per queue link.
pub fn read_states(
    memory: &ProcessMemory,
    layout: &ChanLayout,
    channels: &[u64],
) -> Vec<Option<ChannelState>> {
    let len = layout.read_len();
    let mut buffer = vec![0u8; channels.len() * len];
    let read = {
        let mut reads: Vec<(u64, &mut [u8])> = channels
            .iter()
            .copied()
            .zip(buffer.chunks_exact_mut(len))
            .collect();
        memory.read_many(&mut reads)
    };
    let mut states: Vec<Option<ChannelState>> = buffer
        .chunks_exact(len)
        .zip(read)
        .map(|(bytes, read)| {
            let word = |offset: u64| {
                let at = usize::try_from(offset).ok()?;
                Some(u64::from_le_bytes(
                    bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
                ))
            };
            let closed = |offset: u64| {
                let at = usize::try_from(offset).ok()?;
                Some(u32::from_le_bytes(
                    bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
                ))
            };
            read.then_some(())?;
            Some(ChannelState {
                qcount: word(layout.qcount)?,
                dataqsiz: word(layout.dataqsiz)?,
                closed: closed(layout.closed)? != 0,
                sendx: word(layout.sendx)?,
                recvx: word(layout.recvx)?,
                recvq_first: word(layout.recvq)?,
                sendq_first: word(layout.sendq)?,
                receivers: 0,
                senders: 0,
            })
        })
        .collect();
    // Both queues of every channel: list 2i its receivers, 2i + 1 its senders.
    let heads: Vec<u64> = states
        .iter()
        .flat_map(|state| state.map_or([0, 0], |s| [s.recvq_first, s.sendq_first]))
        .collect();
    let span = (layout.sudog_next, 8, layout.sudog_next);
    follow_chains(memory, &heads, span, MAX_QUEUE, |list, _, _| {
        if let Some(Some(state)) = states.get_mut(list / 2) {
            if list % 2 == 0 {
                state.receivers += 1;
            } else {
                state.senders += 1;
            }
        }
    });
    states
}

/// Follows the channels stuck groups wait on across censuses.
#[derive(Debug, Default)]
pub struct ChannelWatch {
    /// channel -> the state last read, and since when it has been that.
    seen: FastMap<u64, (ChannelState, Instant)>,
}

impl ChannelWatch {
    /// Sets the channel evidence of the stuck groups among `groups` blocked on channels, from
    /// a census taken at `now`. `members(group id)` gives the goids of a group's members;
    /// `records` are the census's goroutines.
    pub fn update(
        &mut self,
        memory: &ProcessMemory,
        (waits, chans): (&WaitLayout, &ChanLayout),
        (now, stuck_after): (Instant, Duration),
        groups: &mut [Group],
        records: &[GoroutineRecord],
        members: impl Fn(u64) -> Vec<u64>,
    ) {
        // (group index, the members' first sudogs).
        let wanted: Vec<(usize, Vec<u64>)> = groups
            .iter()
            .enumerate()
            .filter(|(_, group)| group.stuck > 0 && CHANNEL_WAITS.contains(&&*group.wait_reason))
            .filter_map(|(index, group)| {
                let id = u64::from_str_radix(&group.id, 16).ok()?;
                Some((index, members(id)))
            })
            .collect();
        if wanted.is_empty() {
            self.seen.clear();
            return;
        }
        let goids: FastMap<u64, u64> = {
            let wanted_goids: std::collections::HashSet<u64, foldhash::fast::RandomState> = wanted
                .iter()
                .flat_map(|(_, goids)| goids.iter().copied())
                .collect();
            records
                .iter()
                .filter(|record| record.waiting != 0 && wanted_goids.contains(&record.goid))
                .map(|record| (record.goid, record.waiting))
                .collect()
        };
        // Each group's sudogs, one chain per member: (group, member's first sudog).
        let chains: Vec<(usize, u64)> = wanted
            .iter()
            .flat_map(|(index, members)| {
                members
                    .iter()
                    .filter_map(|goid| goids.get(goid).copied())
                    .map(move |sudog| (*index, sudog))
            })
            .collect();
        let firsts: Vec<u64> = chains.iter().map(|&(_, sudog)| sudog).collect();
        // (sudog, channel) of each chain.
        let mut waits_on: Vec<Vec<(u64, u64)>> = vec![Vec::new(); firsts.len()];
        let (start, len) = waits.sudog_span();
        follow_chains(
            memory,
            &firsts,
            (start, len, waits.sudog_waitlink),
            MAX_CHAIN,
            |chain, sudog, word| {
                if let Some(channel) = word(waits.sudog_c).filter(|&c| c != 0) {
                    waits_on[chain].push((sudog, channel));
                }
            },
        );
        let mut channels: Vec<u64> = waits_on.iter().flatten().map(|&(_, c)| c).collect();
        channels.sort_unstable();
        channels.dedup();
        let states: FastMap<u64, ChannelState> = channels
            .iter()
            .zip(read_states(memory, chans, &channels))
            .filter_map(|(&channel, state)| Some((channel, state?)))
            .collect();
        let mut seen = FastMap::default();
        for (&channel, &state) in &states {
            let since = match self.seen.get(&channel) {
                Some(&(before, since)) if before == state => since,
                _ => now,
            };
            seen.insert(channel, (state, since));
        }
        self.seen = seen;

        for (index, _) in &wanted {
            let group = &mut groups[*index];
            let mine: Vec<&Vec<(u64, u64)>> = chains
                .iter()
                .zip(&waits_on)
                .filter(|((group, _), found)| group == index && !found.is_empty())
                .map(|(_, found)| found)
                .collect();
            let sudogs: Vec<u64> = mine
                .iter()
                .flat_map(|f| f.iter().map(|&(s, _)| s))
                .collect();
            let mut theirs: Vec<u64> = mine
                .iter()
                .flat_map(|f| f.iter().map(|&(_, c)| c))
                .collect();
            theirs.sort_unstable();
            theirs.dedup();
            let read: Vec<(&ChannelState, Instant)> = theirs
                .iter()
                .filter_map(|channel| self.seen.get(channel).map(|(s, since)| (s, *since)))
                .collect();
            if read.is_empty() {
                continue;
            }
            let unchanged_for = read
                .iter()
                .map(|&(_, since)| now.duration_since(since))
                .min()
                .unwrap_or_default();
            // The head of a send queue is one of the members, which have not run for at
            // least --stuck-after: nothing was received on that channel since.
            let head_stuck = group.stuck == group.count
                && read.iter().all(|(state, _)| {
                    state.sendq_first != 0 && sudogs.contains(&state.sendq_first)
                });
            let evidence = ChannelEvidence {
                members: mine.len() as u64,
                channels: theirs.len() as u64,
                receivers_waiting: read.iter().map(|(s, _)| s.receivers).sum(),
                senders_waiting: read.iter().map(|(s, _)| s.senders).sum(),
                buffered: read.iter().map(|(s, _)| s.qcount).sum(),
                capacity: read.iter().map(|(s, _)| s.dataqsiz).sum(),
                closed: read.iter().any(|(s, _)| s.closed),
                unchanged_for_s: unchanged_for.as_secs_f64(),
                head_stuck,
                confident: false,
            };
            let confident = group.wait_reason == "chan send"
                && evidence.channels == 1
                && evidence.receivers_waiting == 0
                && !evidence.closed
                && (head_stuck || unchanged_for >= stuck_after);
            group.channel = Some(ChannelEvidence {
                confident,
                ..evidence
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go 1.23's.
    const LAYOUT: ChanLayout = ChanLayout {
        qcount: 0,
        dataqsiz: 8,
        closed: 28,
        sendx: 48,
        recvx: 56,
        recvq: 64,
        sendq: 80,
        sudog_next: 8,
    };

    #[test]
    fn reads_a_channels_counters_and_counts_its_queues() {
        // Sudogs of 16 words: 0 -> 1 -> 2 sending, 3 receiving on a second channel.
        let mut sudogs = vec![0u64; 4 * 16];
        let base = sudogs.as_ptr() as u64;
        let sudog = |i: usize| base + (i * 128) as u64;
        sudogs[1] = sudog(1);
        sudogs[16 + 1] = sudog(2);
        // A buffered channel full with three senders waiting, and an unbuffered one with a
        // receiver, closed.
        let mut channels = vec![0u64; 2 * 16];
        channels[0] = 4; // qcount
        channels[1] = 4; // dataqsiz
        channels[6] = 2; // sendx
        channels[7] = 2; // recvx
        channels[10] = sudog(0); // sendq.first
        channels[16 + 8] = sudog(3); // recvq.first
        channels[16 + 3] = 1 << 32; // closed (the u32 at +28)
        let at = |i: usize| channels.as_ptr() as u64 + (i * 128) as u64;
        let memory = ProcessMemory::open(std::process::id()).unwrap();
        let states = read_states(&memory, &LAYOUT, &[at(0), at(1), 16]);
        assert_eq!(
            states[0],
            Some(ChannelState {
                qcount: 4,
                dataqsiz: 4,
                closed: false,
                sendx: 2,
                recvx: 2,
                recvq_first: 0,
                sendq_first: sudog(0),
                receivers: 0,
                senders: 3,
            })
        );
        let second = states[1].unwrap();
        assert!(second.closed);
        assert_eq!((second.receivers, second.senders), (1, 0));
        assert_eq!(states[2], None, "unreadable");
        std::hint::black_box((&sudogs, &channels));
    }
}
