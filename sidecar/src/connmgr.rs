//! Connection management: keep a target number of peers (tens, not the whole network).
//!
//! Discovery (Kademlia, mDNS) and bootstrap redials dial only while below the low watermark (half
//! the target); once connections pass the high watermark (1.5x), the least useful unprotected
//! peers are closed down to the target. The gap matters: a peer we prune is typically near the
//! target itself and drops one below it; were it to dial again there, the peer it reaches would
//! soon pass its own high watermark and prune others, who dial in turn (measured with
//! bench/mesh_scale.py at N=100: 40-120 connections opened or closed per node per minute, and a
//! node pruned by its bootstrap peer redialed it every --reconnect-seconds). Between the low
//! watermark and the high one the count stays where it is. Protected:
//! bootstrap peers, relays holding our reservation, peers used for work or verification lately
//! (Oracles in use, the scouts drafting for us), Oracles when this node has no model, and
//! connections younger than a grace period (a newcomer must have time to learn other peers).
//! Among the rest, peers outside our gossip mesh go first, then the least recently used, then
//! the newest connections. A peer we pruned that dials back soon (it has no one else) gets no
//! grace and goes first, so the count settles at the target instead of oscillating.
//!
//! Discovery counts its dials in flight against the target (a Kademlia walk reports dozens of
//! peers at once: dialing each overshoots the target, the pruning that follows drops others
//! below it, and they walk and overshoot in turn), and does not redial a peer whose connection
//! closed lately (a peer that pruned us would be dialed again at its next routing update).
//! A Kademlia random walk opens connections to tens of peers, which then sit above their own
//! targets and prune: a node walks only when below half its target, at most once a minute
//! (measured with bench/mesh_scale.py: walking whenever below the target churned 40-80
//! connections per node per minute at N=50-100, and starved the event loops).

use std::collections::HashMap;

use libp2p::PeerId;

/// Default target peer count.
pub const DEFAULT_TARGET: usize = 32;
/// A peer used this recently is kept.
pub const USED_KEEP_S: u64 = 600;
/// Connections younger than this are not pruned.
pub const GRACE_S: u64 = 20;
/// A peer pruned this recently that reconnects is pruned first, with no grace.
pub const PRUNED_MEMORY_S: u64 = 600;

/// A discovery dial not answered by then no longer counts as in flight.
pub const DIAL_PENDING_S: u64 = 15;
/// Discovery does not redial a peer whose connection closed this recently.
pub const CLOSED_BACKOFF_S: u64 = 120;

/// Least seconds between two random walks for more peers.
pub const WALK_EVERY_S: u64 = 60;

pub struct Candidate {
    pub peer: PeerId,
    pub protected: bool,
    pub in_mesh: bool,
    /// unix seconds of the last request to or from it
    pub last_used: u64,
    pub connected_since: u64,
    /// we dialed it (not a peer that dialed us)
    pub dialed: bool,
}

pub struct Limits {
    pub target: usize,
    /// peer -> unix seconds when we last pruned it
    pruned: HashMap<PeerId, u64>,
    /// discovery dials in flight: peer -> unix seconds of the dial
    dialing: HashMap<PeerId, u64>,
    /// peer -> unix seconds when its last connection closed
    closed: HashMap<PeerId, u64>,
    /// unix seconds of the last random walk
    walked: u64,
    /// a Kademlia walk finished: trim to the target at the next pruning
    trim: bool,
}

impl Limits {
    pub fn new(target: usize) -> Self {
        Limits {
            target: target.max(1),
            pruned: HashMap::new(),
            dialing: HashMap::new(),
            closed: HashMap::new(),
            walked: 0,
            trim: false,
        }
    }

    /// Above this many peers, pruning starts (half the target again).
    pub fn high(&self) -> usize {
        self.target + self.target / 2
    }

    /// Below this many peers discovery dials more (half the target).
    pub fn low(&self) -> usize {
        self.target.div_ceil(2)
    }

    /// Whether discovery (or a bootstrap redial) may dial another peer.
    pub fn may_dial(&self, connected: usize) -> bool {
        connected < self.low()
    }

    /// Whether to walk the DHT for more peers now (records the walk).
    pub fn may_walk(&mut self, connected: usize, now_s: u64) -> bool {
        if connected >= self.low() || now_s.saturating_sub(self.walked) < WALK_EVERY_S {
            return false;
        }
        self.walked = now_s;
        true
    }

    /// Whether discovery may dial this peer now (with `connected` peers): below the low watermark
    /// once the dials in flight count, not already being dialed, not closed lately. Records the dial.
    pub fn dial_discovered(&mut self, peer: PeerId, connected: usize, now_s: u64) -> bool {
        self.dialing.retain(|_, t| now_s.saturating_sub(*t) < DIAL_PENDING_S);
        self.closed.retain(|_, t| now_s.saturating_sub(*t) < CLOSED_BACKOFF_S);
        if connected + self.dialing.len() >= self.low()
            || self.dialing.contains_key(&peer)
            || self.closed.contains_key(&peer)
        {
            return false;
        }
        self.dialing.insert(peer, now_s);
        true
    }

    /// A connection to the peer opened, or a dial to it failed: no longer in flight.
    pub fn dial_done(&mut self, peer: &PeerId) {
        self.dialing.remove(peer);
    }

    /// A Kademlia walk (or lookup) finished: it connected to every peer it asked (tens), each of
    /// which is then one above its own count. The next pruning trims our excess down to the
    /// target among the peers we dialed, young or not, so the walk costs the mesh its own
    /// connections only and not a cascade of pruning elsewhere (measured at N=100: ~65 dials per
    /// walk, 176 prunes per node in 5 minutes).
    pub fn walk_done(&mut self) {
        self.trim = true;
    }

    /// The peer's last connection closed (either side): discovery leaves it alone for a while.
    pub fn on_closed(&mut self, peer: PeerId, now_s: u64) {
        self.dialing.remove(&peer);
        self.closed.insert(peer, now_s);
    }

    /// The peers to disconnect now: above the high watermark, or above the target while a peer
    /// we pruned lately is back or after a walk. Empty otherwise.
    pub fn select_prune(&mut self, mut peers: Vec<Candidate>, now_s: u64) -> Vec<PeerId> {
        self.pruned.retain(|_, t| now_s.saturating_sub(*t) < PRUNED_MEMORY_S);
        let trim = std::mem::take(&mut self.trim);
        let back = |c: &Candidate| !c.protected && self.pruned.contains_key(&c.peer);
        if peers.len() <= self.target || (!trim && peers.len() <= self.high() && !peers.iter().any(back)) {
            return vec![];
        }
        let excess = peers.len() - self.target;
        // the grace is for peers that dialed us (a newcomer learning the network), not for the
        // ones a walk of ours dialed
        peers.retain(|c| {
            !c.protected
                && now_s.saturating_sub(c.last_used) >= USED_KEEP_S
                && (back(c) || (trim && c.dialed) || now_s.saturating_sub(c.connected_since) >= GRACE_S)
        });
        // least valuable first
        peers.sort_by_key(|c| (!back(c), c.in_mesh, c.last_used, std::cmp::Reverse(c.connected_since)));
        let out: Vec<PeerId> = peers.into_iter().take(excess).map(|c| c.peer).collect();
        for p in &out {
            self.pruned.insert(*p, now_s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(protected: bool, in_mesh: bool, since: u64) -> Candidate {
        Candidate { peer: PeerId::random(), protected, in_mesh, last_used: 0, connected_since: since, dialed: false }
    }

    #[test]
    fn prunes_to_target_keeping_protected_mesh_and_young() {
        let mut l = Limits::new(4);
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
        let out = l.select_prune(v, now);
        assert_eq!(out.len(), 4);
        assert!(!out.contains(&mesh_id));
        assert!(keep.iter().all(|k| !out.contains(k)));
        // at or under the high watermark nothing is pruned
        let few: Vec<Candidate> = (0..6).map(|_| cand(false, false, 0)).collect();
        assert!(l.select_prune(few, now).is_empty());
    }

    #[test]
    fn discovery_counts_dials_in_flight_and_backs_off_closed_peers() {
        let mut l = Limits::new(6);
        let now = 10_000;
        let ids: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        // one connected: two dials fill the low watermark (3), the third waits
        assert!(l.dial_discovered(ids[0], 1, now));
        assert!(!l.dial_discovered(ids[0], 1, now), "already in flight");
        assert!(l.dial_discovered(ids[1], 1, now));
        assert!(!l.dial_discovered(ids[2], 1, now));
        // a dial answered frees its slot; one never answered expires
        l.dial_done(&ids[0]);
        assert!(l.dial_discovered(ids[2], 1, now));
        assert!(l.dial_discovered(ids[3], 0, now + DIAL_PENDING_S));
        // a peer whose connection closed is not redialed until the backoff ends
        l.on_closed(ids[4], now);
        l.dial_done(&ids[3]);
        assert!(!l.dial_discovered(ids[4], 0, now + 1));
        assert!(l.dial_discovered(ids[4], 0, now + CLOSED_BACKOFF_S));
    }

    #[test]
    fn walks_only_below_half_the_target_once_a_minute() {
        let mut l = Limits::new(32);
        let now = 10_000;
        assert!(!l.may_walk(16, now));
        assert!(l.may_walk(15, now));
        assert!(!l.may_walk(2, now + WALK_EVERY_S - 1));
        assert!(l.may_walk(2, now + WALK_EVERY_S));
    }

    #[test]
    fn after_a_walk_the_peers_it_dialed_are_trimmed_to_the_target_young_or_not() {
        let mut l = Limits::new(4);
        let now = 10_000;
        // 6 peers, at the high watermark, 4 of them dialed by a walk 2 s ago
        let mut v: Vec<Candidate> = (0..2).map(|_| cand(false, false, 0)).collect();
        for _ in 0..4 {
            v.push(Candidate { dialed: true, ..cand(false, false, now - 2) });
        }
        let dialed: Vec<PeerId> = v[2..].iter().map(|c| c.peer).collect();
        let copy = |v: &[Candidate]| -> Vec<Candidate> {
            v.iter()
                .map(|c| Candidate { peer: c.peer, dialed: c.dialed, ..cand(false, false, c.connected_since) })
                .collect()
        };
        assert!(l.select_prune(copy(&v), now).is_empty(), "at the high watermark: nothing to prune");
        l.walk_done();
        let out = l.select_prune(copy(&v), now);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|p| dialed.contains(p)), "only young peers the walk dialed");
        // once: the next pruning is the usual one again
        let fresh: Vec<Candidate> = (0..6).map(|_| Candidate { dialed: true, ..cand(false, false, now - 2) }).collect();
        assert!(l.select_prune(fresh, now).is_empty());
    }

    #[test]
    fn a_pruned_peer_that_dials_back_goes_first_without_grace() {
        let mut l = Limits::new(2);
        let now = 10_000;
        let ids: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let at = |p: &PeerId, since: u64| Candidate { peer: *p, connected_since: since, ..cand(false, false, 0) };
        let out = l.select_prune(ids.iter().map(|p| at(p, 0)).collect(), now);
        assert_eq!(out.len(), 2);
        // the two pruned peers dial back at once: young, but they go again (before the old ones)
        let again =
            l.select_prune(ids.iter().map(|p| at(p, if out.contains(p) { now + 5 } else { 0 })).collect(), now + 5);
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|p| out.contains(p)));
        // one above the target, under the high watermark: only because a pruned peer is back
        let kept: Vec<&PeerId> = ids.iter().filter(|p| !out.contains(p)).collect();
        let three = vec![at(kept[0], 0), at(kept[1], 0), at(&out[0], now + 6)];
        assert_eq!(l.select_prune(three, now + 6), vec![out[0]]);
        let fresh = vec![at(kept[0], 0), at(kept[1], 0), at(&PeerId::random(), 0)];
        assert!(l.select_prune(fresh, now + 6).is_empty());
    }

    /// A mesh of nodes each dialing at random and pruning (as the event loop does every 5 s)
    /// settles: after a minute, no connection opens or closes any more, and every node ends
    /// between the low and the high watermark. (A regression check of the watermarks together;
    /// this model settles with discovery dialing up to the target too: what churned at N=100 was
    /// Kademlia's own walks, which it does not model.)
    #[test]
    fn a_mesh_of_pruning_nodes_settles_without_churn() {
        let (n, target) = (60usize, 8usize);
        let ids: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        let mut limits: Vec<Limits> = (0..n).map(|_| Limits::new(target)).collect();
        // conns[i]: j -> since (unix s)
        let mut conns: Vec<HashMap<usize, u64>> = vec![HashMap::new(); n];
        let mut seed = 7u64;
        let mut rnd = |k: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % k
        };
        let mut churn_late = 0;
        for round in 0..60u64 {
            let now = 10_000 + round * 5;
            let mut changes = 0;
            for i in 0..n {
                for _ in 0..n {
                    if !limits[i].may_dial(conns[i].len()) {
                        break;
                    }
                    let j = rnd(n);
                    if j == i || conns[i].contains_key(&j) || !limits[i].dial_discovered(ids[j], conns[i].len(), now) {
                        continue;
                    }
                    limits[i].dial_done(&ids[j]);
                    conns[i].insert(j, now);
                    conns[j].insert(i, now);
                    changes += 1;
                }
            }
            for i in 0..n {
                let cands = conns[i]
                    .iter()
                    .map(|(j, since)| Candidate {
                        peer: ids[*j],
                        protected: false,
                        in_mesh: false,
                        last_used: 0,
                        connected_since: *since,
                        dialed: false,
                    })
                    .collect();
                for p in limits[i].select_prune(cands, now) {
                    let j = ids.iter().position(|x| *x == p).unwrap();
                    conns[i].remove(&j);
                    conns[j].remove(&i);
                    limits[i].on_closed(ids[j], now);
                    limits[j].on_closed(ids[i], now);
                    changes += 1;
                }
            }
            if round >= 12 {
                churn_late += changes;
            }
        }
        assert_eq!(churn_late, 0, "connections still opened or closed after the first minute");
        let degrees: Vec<usize> = conns.iter().map(|c| c.len()).collect();
        assert!(degrees.iter().all(|d| *d >= target.div_ceil(2) && *d <= target + target / 2), "{degrees:?}");
    }
}
