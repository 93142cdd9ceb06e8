//! Reachability: what AutoNAT says about this node, the relays it holds a reservation on when
//! it is behind a NAT, and the peers it reached directly after DCUtR hole punching.
//!
//! A publicly reachable node serves as a relay (v2, the library's limits on reservations and
//! circuits); a node that AutoNAT finds private reserves a slot on up to `MAX_RELAYS` relays it
//! learns of through identify, so others reach it at `<relay>/p2p-circuit/p2p/<it>`, and DCUtR
//! then upgrades such relayed connections to direct ones when the NATs allow.

use libp2p::{autonat, dcutr, identify, multiaddr::Protocol, relay, Multiaddr, PeerId, StreamProtocol};
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

    /// Circuit addresses to listen on now: when private, on relays we hold no reservation with.
    pub fn reservations_to_make(&mut self, connected: impl Fn(&PeerId) -> bool) -> Vec<Multiaddr> {
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
            out.push(addr.clone().with(Protocol::P2p(*peer)).with(Protocol::P2pCircuit));
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

    /// A listener closed (a reservation refused or lost): forget it, so another is tried.
    pub fn on_listener_closed(&mut self, addrs: &[Multiaddr]) {
        for a in addrs {
            if let Some(Protocol::P2p(relay)) = a.iter().take_while(|p| !matches!(p, Protocol::P2pCircuit)).last() {
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
