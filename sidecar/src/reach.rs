//! Reachability: what AutoNAT says about this node, the relays it holds a reservation on when
//! it is behind a NAT, and the peers it reached directly after DCUtR hole punching.
//!
//! A publicly reachable node serves as a relay (v2, the library's limits on reservations and
//! circuits); a node that AutoNAT finds private reserves a slot on up to `MAX_RELAYS` relays it
//! learns of through identify, so others reach it at `<relay>/p2p-circuit/p2p/<it>`, and DCUtR
//! then upgrades such relayed connections to direct ones when the NATs allow.

use libp2p::{
    autonat, core::transport::ListenerId, dcutr, identify, multiaddr::Protocol, relay, Multiaddr, PeerId,
    StreamProtocol,
};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

/// Relays a private node reserves a slot on.
pub const MAX_RELAYS: usize = 2;
/// Relay candidates remembered.
const MAX_CANDIDATES: usize = 32;
pub const HOP_PROTOCOL: StreamProtocol = StreamProtocol::new("/libp2p/circuit/relay/0.2.0/hop");

#[derive(Default)]
pub struct Reach {
    nat: &'static str,
    public_addr: Option<Multiaddr>,
    pub relay_server: bool,
    /// relays that accepted our reservation -> our circuit address through them
    reserved: HashMap<PeerId, Multiaddr>,
    /// relays asked for a reservation (listen_on issued), not yet answered
    asked: HashSet<PeerId>,
    /// the circuit listener of each relay asked: a refused reservation closes it before it
    /// reports any address, so only its id tells which relay to ask again
    listeners: HashMap<ListenerId, PeerId>,
    /// peers that run a relay, with a direct address of theirs
    candidates: HashMap<PeerId, Multiaddr>,
    /// peers reached directly after hole punching (until they disconnect)
    punched: HashSet<PeerId>,
    pub punch_ok: u64,
    pub punch_failed: u64,
}

pub fn is_relayed(a: &Multiaddr) -> bool {
    a.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

impl Reach {
    pub fn new(relay_server: bool) -> Reach {
        Reach { nat: "unknown", relay_server, ..Default::default() }
    }

    pub fn on_autonat(&mut self, ev: &autonat::Event) {
        if let autonat::Event::StatusChanged { new, .. } = ev {
            tracing::info!("AutoNAT: reachability is now {new:?}");
            match new {
                autonat::NatStatus::Public(a) => {
                    self.nat = "public";
                    self.public_addr = Some(a.clone());
                }
                autonat::NatStatus::Private => {
                    self.nat = "private";
                    self.public_addr = None;
                }
                autonat::NatStatus::Unknown => self.nat = "unknown",
            }
        }
    }

    /// Notes a peer that serves as a relay (its identify lists the hop protocol).
    pub fn on_identify(&mut self, peer: PeerId, info: &identify::Info, conn_addr: Option<&Multiaddr>) {
        if !info.protocols.contains(&HOP_PROTOCOL) {
            self.candidates.remove(&peer);
            return;
        }
        let addr = conn_addr
            .filter(|a| !is_relayed(a))
            .cloned()
            .or_else(|| info.listen_addrs.iter().find(|a| !is_relayed(a)).cloned());
        if let Some(a) = addr {
            if self.candidates.len() < MAX_CANDIDATES || self.candidates.contains_key(&peer) {
                let bare: Multiaddr = a.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
                self.candidates.insert(peer, bare);
            }
        }
    }

    /// Circuit addresses to listen on now (with their relay): when private, on relays we hold no
    /// reservation with. Pass each listener's id to `listening`.
    pub fn reservations_to_make(&mut self, connected: impl Fn(&PeerId) -> bool) -> Vec<(PeerId, Multiaddr)> {
        if self.nat != "private" {
            return vec![];
        }
        let mut out = vec![];
        let held = self.reserved.len() + self.asked.len();
        let mut room = MAX_RELAYS.saturating_sub(held);
        for (peer, addr) in &self.candidates {
            if room == 0 {
                break;
            }
            if self.reserved.contains_key(peer) || self.asked.contains(peer) || !connected(peer) {
                continue;
            }
            self.asked.insert(*peer);
            room -= 1;
            out.push((*peer, addr.clone().with(Protocol::P2p(*peer)).with(Protocol::P2pCircuit)));
        }
        out
    }

    pub fn on_relay_client(&mut self, ev: &relay::client::Event) {
        if let relay::client::Event::ReservationReqAccepted { relay_peer_id, .. } = ev {
            self.asked.remove(relay_peer_id);
            if let Some(a) = self.candidates.get(relay_peer_id) {
                let circuit = a.clone().with(Protocol::P2p(*relay_peer_id)).with(Protocol::P2pCircuit);
                tracing::info!("relay reservation accepted: reachable at {circuit}");
                self.reserved.insert(*relay_peer_id, circuit);
            }
        }
    }

    /// The circuit listener asking `relay` for a reservation, or None when it could not start.
    pub fn listening(&mut self, relay: PeerId, id: Option<ListenerId>) {
        match id {
            Some(id) => {
                self.listeners.insert(id, relay);
            }
            None => {
                self.asked.remove(&relay);
            }
        }
    }

    /// A listener closed (a reservation refused or lost): forget its relay, so that it (or
    /// another) is asked again at the next maintenance. A relay that has not yet learned its own
    /// public address answers with an empty reservation, which the client refuses: asked again
    /// once AutoNAT finds it public, it succeeds. By id, not address: a refused listener has no
    /// address, and one through a relay that is itself reached through a circuit names the outer
    /// relay first.
    pub fn on_listener_closed(&mut self, id: ListenerId) {
        if let Some(relay) = self.listeners.remove(&id) {
            // unless a newer listener asks the same relay (after a reconnection)
            if !self.listeners.values().any(|r| r == &relay) {
                self.asked.remove(&relay);
                self.reserved.remove(&relay);
            }
        }
    }

    pub fn on_dcutr(&mut self, ev: &dcutr::Event) {
        match &ev.result {
            Ok(_) => {
                tracing::info!("hole punching to {} succeeded: direct connection", ev.remote_peer_id);
                self.punch_ok += 1;
                self.punched.insert(ev.remote_peer_id);
            }
            Err(e) => {
                tracing::info!("hole punching to {} failed: {e}", ev.remote_peer_id);
                self.punch_failed += 1;
            }
        }
    }

    pub fn on_disconnected(&mut self, peer: &PeerId) {
        self.punched.remove(peer);
        self.asked.remove(peer);
        if self.reserved.remove(peer).is_some() {
            tracing::info!("lost the relay {peer}");
        }
    }

    pub fn is_relay_of_ours(&self, peer: &PeerId) -> bool {
        self.reserved.contains_key(peer) || self.asked.contains(peer)
    }

    pub fn is_punched(&self, peer: &PeerId) -> bool {
        self.punched.contains(peer)
    }

    /// One word for the status line: `public`, `relayed` (behind a NAT, reachable through a
    /// relay), `hole-punched` (behind a NAT, with direct connections after DCUtR), `private`
    /// (behind a NAT, no relay yet) or `unknown` (AutoNAT has not decided).
    pub fn mode(&self) -> &'static str {
        match self.nat {
            "public" => "public",
            "private" if !self.punched.is_empty() => "hole-punched",
            "private" if !self.reserved.is_empty() => "relayed",
            "private" => "private",
            _ => "unknown",
        }
    }

    pub fn to_json(&self) -> Value {
        let mut relays: Vec<String> = self.reserved.values().map(|a| a.to_string()).collect();
        relays.sort();
        json!({
            "mode": self.mode(),
            "nat": self.nat,
            "public_addr": self.public_addr.as_ref().map(|a| a.to_string()),
            "relay_server": self.relay_server,
            "relay_addrs": relays,
            "hole_punched_peers": self.punched.len(),
            "hole_punch_ok": self.punch_ok,
            "hole_punch_failed": self.punch_failed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay_info() -> identify::Info {
        identify::Info {
            public_key: libp2p::identity::Keypair::generate_ed25519().public(),
            protocol_version: "p".into(),
            agent_version: "a".into(),
            listen_addrs: vec![],
            protocols: vec![HOP_PROTOCOL],
            observed_addr: "/ip4/10.0.0.2/tcp/1".parse().unwrap(),
            signed_peer_record: None,
        }
    }

    #[test]
    fn a_refused_reservation_is_asked_again() {
        let mut r = Reach::new(false);
        r.nat = "private";
        let relay = PeerId::random();
        r.on_identify(relay, &relay_info(), Some(&"/ip4/10.0.0.1/tcp/4001".parse().unwrap()));
        let asked = r.reservations_to_make(|_| true);
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].0, relay);
        let id = ListenerId::next();
        r.listening(relay, Some(id));
        assert!(r.reservations_to_make(|_| true).is_empty(), "one request at a time");
        // the relay was not yet public: its reservation had no address, the client refused it
        // and closed the listener before it reported any address
        r.on_listener_closed(id);
        let again = r.reservations_to_make(|_| true);
        assert_eq!(again.iter().map(|x| x.0).collect::<Vec<_>>(), vec![relay]);
    }

    #[test]
    fn a_listener_that_could_not_start_is_forgotten() {
        let mut r = Reach::new(false);
        r.nat = "private";
        let relay = PeerId::random();
        r.on_identify(relay, &relay_info(), Some(&"/ip4/10.0.0.1/tcp/4001".parse().unwrap()));
        assert_eq!(r.reservations_to_make(|_| true).len(), 1);
        r.listening(relay, None);
        assert_eq!(r.reservations_to_make(|_| true).len(), 1);
    }

    #[test]
    fn a_listener_closing_forgets_only_its_own_relay() {
        let mut r = Reach::new(false);
        r.nat = "private";
        let (outer, inner) = (PeerId::random(), PeerId::random());
        r.on_identify(outer, &relay_info(), Some(&"/ip4/10.0.0.1/tcp/4001".parse().unwrap()));
        r.on_identify(inner, &relay_info(), Some(&"/ip4/10.0.0.3/tcp/4001".parse().unwrap()));
        let (a, b) = (ListenerId::next(), ListenerId::next());
        for (relay, _) in r.reservations_to_make(|_| true) {
            r.listening(relay, Some(if relay == outer { a } else { b }));
        }
        // the inner relay (itself reached through `outer`) goes away: `outer` stays reserved
        r.on_listener_closed(b);
        assert_eq!(r.reservations_to_make(|_| true).iter().map(|x| x.0).collect::<Vec<_>>(), vec![inner]);
        assert!(r.is_relay_of_ours(&outer));
    }
}
