//! Connection management: keep a target number of peers (tens, not the whole network).
//!
//! Discovery (Kademlia, mDNS) dials only while below the target; once connections pass the high
//! watermark, the least useful unprotected peers are closed down to the target. Protected:
//! bootstrap peers, relays holding our reservation, peers used for work or verification lately
//! (Oracles in use, the scouts drafting for us), Oracles when this node has no model, and
//! connections younger than a grace period (a newcomer must have time to learn other peers).
//! Among the rest, peers outside our gossip mesh go first, then the least recently used, then
//! the newest connections.

use libp2p::PeerId;

/// Default target peer count.
pub const DEFAULT_TARGET: usize = 32;
/// A peer used this recently is kept.
pub const USED_KEEP_S: u64 = 600;
/// Connections younger than this are not pruned.
pub const GRACE_S: u64 = 20;

pub struct Limits {
    pub target: usize,
}

impl Limits {
    /// Above this many peers, pruning starts (half the target again).
    pub fn high(&self) -> usize {
        self.target + self.target / 2
    }

    /// Whether discovery may dial another peer.
    pub fn may_dial(&self, connected: usize) -> bool {
        connected < self.target
    }
}

pub struct Candidate {
    pub peer: PeerId,
    pub protected: bool,
    pub in_mesh: bool,
    /// unix seconds of the last request to or from it
    pub last_used: u64,
    pub connected_since: u64,
}

/// The peers to disconnect now (empty unless above the high watermark).
pub fn select_prune(limits: &Limits, mut peers: Vec<Candidate>, now_s: u64) -> Vec<PeerId> {
    if peers.len() <= limits.high() {
        return vec![];
    }
    let excess = peers.len() - limits.target;
    peers.retain(|c| {
        !c.protected
            && now_s.saturating_sub(c.connected_since) >= GRACE_S
            && now_s.saturating_sub(c.last_used) >= USED_KEEP_S
    });
    // least valuable first
    peers.sort_by_key(|c| (c.in_mesh, c.last_used, std::cmp::Reverse(c.connected_since)));
    peers.into_iter().take(excess).map(|c| c.peer).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(protected: bool, in_mesh: bool, since: u64) -> Candidate {
        Candidate { peer: PeerId::random(), protected, in_mesh, last_used: 0, connected_since: since }
    }

    #[test]
    fn prunes_to_target_keeping_protected_mesh_and_young() {
        let l = Limits { target: 4 };
        let now = 10_000;
        let mut v = vec![cand(true, false, 0), cand(true, false, 0)];
        v.push(cand(false, false, now - 1)); // young
        let mesh = cand(false, true, 0);
        let mesh_id = mesh.peer;
        v.push(mesh);
        for _ in 0..4 {
            v.push(cand(false, false, 100));
        }
        assert_eq!(v.len(), 8);
        let keep: Vec<PeerId> = v.iter().filter(|c| c.protected).map(|c| c.peer).collect();
        let out = select_prune(&l, v, now);
        assert_eq!(out.len(), 4);
        assert!(!out.contains(&mesh_id));
        assert!(keep.iter().all(|k| !out.contains(k)));
        // at or under the high watermark nothing is pruned
        let few: Vec<Candidate> = (0..6).map(|_| cand(false, false, 0)).collect();
        assert!(select_prune(&l, few, now).is_empty());
    }
}
