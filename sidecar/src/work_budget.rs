//! Work messages are bounded per peer in bytes, not only in count (issue 19: a flood of large
//! work messages). The per-peer rate limit counts messages (200/s), and a work message may hold
//! 256 KiB: one peer could push ~50 MB/s of work into the event buffer, faster than the node
//! reads it, and the node then loses events (`lagged`), honest peers' work and verdicts among
//! them. A real Oracle's work is the request's text and token ids so far, sent every few tokens:
//! tens of KiB a second even with long contexts and a fast GPU. So each peer gets a byte budget
//! for work (direct and gossip) before it reaches the event channel; what is over it is dropped
//! (counted as `dropped_rate`; gossip is ignored, not forwarded), and other peers' work is not
//! touched.

//!
//! Many identities together (Sybils: identities are free) each stay under that budget and still
//! add up: twelve peers at 1 MiB/s of 250 KiB works queued the honest Oracle's works behind
//! theirs, past their deadlines. So work also has an aggregate budget, as much as one peer's:
//! while all peers together stay under it everything passes; over it, a peer's work passes only
//! while its own recent rate is under its fair share (the aggregate rate over the peers sending
//! now). A peer sending little (an honest Oracle) is never cut; the heavy senders share the rest.

use crate::util::RateLimiter;
use libp2p::PeerId;
use std::collections::HashMap;
use std::time::Instant;

/// Bytes of work per second one peer may send, and the burst it may send at once.
pub const BYTES_PER_S: f64 = 1024.0 * 1024.0;
pub const BURST_BYTES: f64 = 4.0 * 1024.0 * 1024.0;
/// Bytes of work per second all peers together may send before fair shares apply, and the burst.
pub const TOTAL_BYTES_PER_S: f64 = BYTES_PER_S;
pub const TOTAL_BURST_BYTES: f64 = BURST_BYTES;
/// A peer's recent rate decays with this time constant (seconds); below ACTIVE_BYTES it is idle.
const RATE_WINDOW_S: f64 = 1.0;
const ACTIVE_BYTES: f64 = 1024.0;
const MAX_PEERS: usize = 4096;

pub struct WorkBudget {
    per_peer: RateLimiter,
    /// The aggregate bucket: bytes left, and when it was last filled (may go below 0 by what
    /// peers under their share sent while it was empty, at most one burst).
    total: (f64, Instant),
    /// Each peer's recent bytes (decayed: about its bytes per second) and when last updated.
    recent: HashMap<PeerId, (f64, Instant)>,
}

pub fn limiter() -> WorkBudget {
    WorkBudget {
        per_peer: RateLimiter::new(BYTES_PER_S, BURST_BYTES, MAX_PEERS),
        total: (TOTAL_BURST_BYTES, Instant::now()),
        recent: HashMap::new(),
    }
}

/// Whether `peer` may send a work message of `bytes` now (taken from its budget if so).
pub fn allow(budget: &mut WorkBudget, peer: &PeerId, bytes: usize) -> bool {
    allow_at(budget, peer, bytes, Instant::now())
}

fn decayed(entry: (f64, Instant), now: Instant) -> f64 {
    entry.0 * (-now.saturating_duration_since(entry.1).as_secs_f64() / RATE_WINDOW_S).exp()
}

fn allow_at(budget: &mut WorkBudget, peer: &PeerId, bytes: usize, now: Instant) -> bool {
    if !budget.per_peer.allow_cost(peer, bytes as f64, now) {
        return false;
    }
    let cost = bytes as f64;
    let (left, at) = budget.total;
    let left = (left + now.saturating_duration_since(at).as_secs_f64() * TOTAL_BYTES_PER_S).min(TOTAL_BURST_BYTES);
    let mine = budget.recent.get(peer).map_or(0.0, |e| decayed(*e, now));
    let pass = if left >= cost {
        true
    } else {
        let active = budget.recent.iter().filter(|(p, e)| *p != peer && decayed(**e, now) >= ACTIVE_BYTES).count() + 1;
        (mine + cost) / RATE_WINDOW_S <= TOTAL_BYTES_PER_S / active as f64
    };
    if !pass {
        budget.total = (left, now);
        return false;
    }
    budget.total = ((left - cost).max(-TOTAL_BURST_BYTES), now);
    if budget.recent.len() >= MAX_PEERS && !budget.recent.contains_key(peer) {
        budget.recent.retain(|_, e| decayed(*e, now) >= ACTIVE_BYTES);
    }
    if budget.recent.len() < MAX_PEERS || budget.recent.contains_key(peer) {
        budget.recent.insert(*peer, (mine + cost, now));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_other_peers_are_untouched() {
        let mut budget = limiter();
        let (flooder, honest) = (PeerId::random(), PeerId::random());
        let big = 256 * 1024;
        let passed = (0..100).filter(|_| allow(&mut budget, &flooder, big)).count();
        assert!((16..=17).contains(&passed), "{passed}"); // the 4 MiB burst, then nothing
                                                          // Honest work still passes: 400 KiB at once, within its fair share of the aggregate.
        assert!((0..20).all(|_| allow(&mut budget, &honest, 20 * 1024)));
    }

    #[test]
    fn sybils_each_under_their_budget_share_the_aggregate_and_an_honest_peer_is_untouched() {
        let mut budget = limiter();
        let start = Instant::now();
        let sybils: Vec<PeerId> = (0..12).map(|_| PeerId::random()).collect();
        let honest = PeerId::random();
        let (mut sybil_bytes, mut honest_ok) = (0usize, 0);
        for tick in 0..100 {
            // 10 s: every Sybil sends 256 KiB four times a second (1 MiB/s, its own budget) ...
            let now = start + Duration::from_millis(tick * 100);
            for s in &sybils {
                if tick % 2 == 0 && allow_at(&mut budget, s, 256 * 1024, now) {
                    sybil_bytes += 256 * 1024;
                }
            }
            // ... and an honest Oracle 2 KiB ten times a second.
            honest_ok += allow_at(&mut budget, &honest, 2048, now) as usize;
        }
        assert_eq!(honest_ok, 100);
        // All Sybils together: about the aggregate budget (was 12 MiB/s: 120 MiB in 10 s).
        let mib = sybil_bytes as f64 / BYTES_PER_S;
        assert!(mib <= 10.0 * TOTAL_BYTES_PER_S / BYTES_PER_S + 2.0 * TOTAL_BURST_BYTES / BYTES_PER_S, "{mib} MiB");
    }
}
