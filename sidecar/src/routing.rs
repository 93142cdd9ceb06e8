//! The Kademlia routing table: who goes in, and the probe dials it must not make.
//!
//! With libp2p-kad's default (`BucketInserts::OnConnected`) every peer that connects is offered to
//! the table, and when the peer's bucket is full and its oldest entry is disconnected, the library
//! dials that entry to see whether it is still alive. In a mesh that prunes to a target
//! (connmgr.rs) most entries are disconnected but alive, so the probe succeeds and opens a
//! connection nobody wants: it is pruned, which leaves another disconnected entry, and the next
//! connection probes again, on this node and on the probed one. So inserts are manual: a peer goes
//! in (with the addresses identify reports, or the one we dialed) only while its bucket has room,
//! and a full bucket is left as it is, with no probe. A peer none of whose addresses answers a dial
//! leaves the table ([`forget_unreachable`]), which makes room where the library's probe would
//! have.
//!
//! Walks: a bootstrap is a lookup of our own id followed by a lookup in every bucket farther away;
//! at N=100 that dialed most of the network, which the walker then trims (measured with
//! bench/mesh_scale.py: ~414 connections opened per node in 4 minutes, 4 of them its own dials,
//! with 1.3 walks per node; ~90 with the walks cut), and the library bootstraps by itself while its
//! table has fewer than 20 entries, which every joining node's has. The event loop ends each
//! bootstrap after its first step (net.rs; not the half-hourly refresh), and a node short of peers
//! dials disconnected table entries ([`disconnected`]) before it walks at all.

use libp2p::{kad, Multiaddr, PeerId, StreamProtocol};
use std::num::NonZeroUsize;
use std::time::Duration;

/// Entries per k-bucket (the library's default, set here so [`add`] knows when a bucket is full).
pub const KBUCKET_SIZE: usize = 20;

pub type Kad = kad::Behaviour<kad::store::MemoryStore>;

/// The Kademlia configuration: manual inserts, no periodic walk (the event loop walks instead:
/// net.rs `KAD_REFRESH`, and below connmgr's low watermark).
pub fn config(protocol: &'static str) -> kad::Config {
    let mut cfg = kad::Config::new(StreamProtocol::new(protocol));
    cfg.set_query_timeout(Duration::from_secs(30));
    cfg.set_periodic_bootstrap_interval(None);
    cfg.set_kbucket_inserts(kad::BucketInserts::Manual);
    cfg.set_kbucket_size(NonZeroUsize::new(KBUCKET_SIZE).expect("nonzero"));
    cfg
}

/// Adds a peer's address to the routing table if the peer is already there or its bucket has
/// room; a full bucket is left alone (adding would make the library dial its oldest disconnected
/// entry). Returns whether the address went in.
pub fn add(kad: &mut Kad, peer: &PeerId, addr: Multiaddr) -> bool {
    let room = match kad.kbucket(*peer) {
        Some(b) => b.num_entries() < KBUCKET_SIZE || b.iter().any(|e| e.node.key.preimage() == peer),
        None => false, // our own id
    };
    room && matches!(kad.add_address(peer, addr), kad::RoutingUpdate::Success)
}

/// A dial to the peer failed on every address it was tried on: drop it from the table (the
/// library only drops its addresses and keeps the last one).
pub fn forget_unreachable(kad: &mut Kad, peer: &PeerId) {
    kad.remove_peer(peer);
}

/// The peers in the table that are not connected, in random order (so that nodes short of peers
/// do not all dial the same ones).
pub fn disconnected(kad: &mut Kad) -> Vec<PeerId> {
    use rand::seq::SliceRandom;
    let mut out: Vec<PeerId> = kad
        .kbuckets()
        .flat_map(|b| {
            b.iter()
                .filter(|e| e.status == kad::NodeStatus::Disconnected)
                .map(|e| *e.node.key.preimage())
                .collect::<Vec<_>>()
        })
        .collect();
    out.shuffle(&mut rand::thread_rng());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::ConnectedPoint;
    use libp2p::identity::Keypair;
    use libp2p::swarm::{behaviour::ConnectionEstablished, ConnectionId, FromSwarm, NetworkBehaviour};

    fn addr(i: usize) -> Multiaddr {
        format!("/ip4/10.0.{}.{}/tcp/4001", i / 250, i % 250).parse().unwrap()
    }

    /// Peers that fall into one bucket of `kad`'s table (the farthest: half of all ids).
    fn same_bucket(kad: &mut Kad, n: usize) -> Vec<PeerId> {
        let first = PeerId::random();
        let range = kad.kbucket(first).unwrap().range();
        let mut out = vec![first];
        while out.len() < n {
            let p = PeerId::random();
            if kad.kbucket(p).unwrap().range() == range {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn a_full_bucket_takes_no_new_peer_and_probes_no_old_one() {
        let me = Keypair::generate_ed25519().public().to_peer_id();
        let mut kad = Kad::with_config(me, kad::store::MemoryStore::new(me), config("/t/kad/1"));
        let peers = same_bucket(&mut kad, KBUCKET_SIZE + 1);
        for (i, p) in peers[..KBUCKET_SIZE].iter().enumerate() {
            assert!(add(&mut kad, p, addr(i)), "room in the bucket for entry {i}");
        }
        // the newcomer is connected (identify reports addresses on a connection): the library
        // would make it pending and dial the oldest, disconnected, entry to see if it is alive
        let newcomer = peers[KBUCKET_SIZE];
        let endpoint = ConnectedPoint::Listener { local_addr: addr(1000), send_back_addr: addr(1001) };
        kad.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: newcomer,
            connection_id: ConnectionId::new_unchecked(1),
            endpoint: &endpoint,
            failed_addresses: &[],
            other_established: 0,
        }));
        assert!(!add(&mut kad, &newcomer, addr(KBUCKET_SIZE)));
        let b = kad.kbucket(peers[0]).unwrap();
        assert!(!b.has_pending(), "a pending entry means a probe dial was queued");
        assert_eq!(b.num_entries(), KBUCKET_SIZE);
        // a peer already in a full bucket still gets its new addresses
        assert!(add(&mut kad, &peers[0], addr(999)));
        // an unreachable peer leaves the table and makes room
        forget_unreachable(&mut kad, &peers[1]);
        assert!(add(&mut kad, &newcomer, addr(KBUCKET_SIZE)));
    }

    #[test]
    fn the_peers_to_dial_from_the_table_are_its_disconnected_entries() {
        let me = Keypair::generate_ed25519().public().to_peer_id();
        let mut kad = Kad::with_config(me, kad::store::MemoryStore::new(me), config("/t/kad/1"));
        let peers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            add(&mut kad, p, addr(i));
        }
        let mut got = disconnected(&mut kad);
        got.sort();
        let mut want = peers.clone();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn our_own_id_never_enters() {
        let me = Keypair::generate_ed25519().public().to_peer_id();
        let mut kad = Kad::with_config(me, kad::store::MemoryStore::new(me), config("/t/kad/1"));
        assert!(!add(&mut kad, &me, addr(1)));
    }
}
