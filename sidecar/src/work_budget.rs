//! Work messages are bounded per peer in bytes, not only in count (issue 19: a flood of large
//! work messages). The per-peer rate limit counts messages (200/s), and a work message may hold
//! 256 KiB: one peer could push ~50 MB/s of work into the event buffer, faster than the node
//! reads it, and the node then loses events (`lagged`), honest peers' work and verdicts among
//! them. A real Oracle's work is the request's text and token ids so far, sent every few tokens:
//! tens of KiB a second even with long contexts and a fast GPU. So each peer gets a byte budget
//! for work (direct and gossip) before it reaches the event channel; what is over it is dropped
//! (counted as `dropped_rate`; gossip is ignored, not forwarded), and other peers' work is not
//! touched.

use crate::util::RateLimiter;
use libp2p::PeerId;
use std::time::Instant;

/// Bytes of work per second one peer may send, and the burst it may send at once.
pub const BYTES_PER_S: f64 = 1024.0 * 1024.0;
pub const BURST_BYTES: f64 = 4.0 * 1024.0 * 1024.0;

pub fn limiter() -> RateLimiter {
    RateLimiter::new(BYTES_PER_S, BURST_BYTES, 4096)
}

/// Whether `peer` may send a work message of `bytes` now (taken from its budget if so).
pub fn allow(budget: &mut RateLimiter, peer: &PeerId, bytes: usize) -> bool {
    budget.allow_cost(peer, bytes as f64, Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_other_peers_are_untouched() {
        let mut budget = limiter();
        let (flooder, honest) = (PeerId::random(), PeerId::random());
        let big = 256 * 1024;
        let passed = (0..100).filter(|_| allow(&mut budget, &flooder, big)).count();
        assert!((16..=17).contains(&passed), "{passed}"); // the 4 MiB burst, then nothing
        assert!((0..50).all(|_| allow(&mut budget, &honest, 20 * 1024))); // 1 MB of honest work
    }
}
