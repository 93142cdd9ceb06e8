//! Peers remembered across restarts: a small JSON file in the data directory, so a node that
//! was on the mesh once rejoins it without any bootstrap address.
//!
//! The file is bounded (`MAX_PEERS` peers, `MAX_ADDRS` addresses each, most recently seen kept),
//! written atomically with mode 0600, and read as hostile input (bad entries are skipped).

use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const FILE: &str = "peers.json";
/// Most peers kept in the file.
pub const MAX_PEERS: usize = 64;
/// Most addresses kept per peer.
pub const MAX_ADDRS: usize = 4;
/// Largest file read back (anything larger is ignored as corrupt).
const MAX_FILE_BYTES: u64 = 256 * 1024;

pub struct PeerStore {
    path: Option<PathBuf>,
    /// peer -> (addresses, most recent first; last seen, unix seconds)
    peers: HashMap<PeerId, (Vec<Multiaddr>, u64)>,
    dirty: bool,
}

/// Whether an address is worth remembering: a dialable transport address (no relay circuit,
/// whose reservation is gone after a restart; no unspecified host).
fn rememberable(a: &Multiaddr) -> bool {
    a.iter().all(|p| match p {
        Protocol::P2pCircuit | Protocol::P2p(_) => false,
        Protocol::Ip4(ip) => !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_unspecified(),
        _ => true,
    })
}

impl PeerStore {
    /// Loads the store from `dir/peers.json` (none: remembers nothing on disk).
    pub fn load(dir: Option<&Path>) -> PeerStore {
        let path = dir.map(|d| d.join(FILE));
        let mut store = PeerStore { path, peers: HashMap::new(), dirty: false };
        let Some(p) = &store.path else { return store };
        let too_big = std::fs::metadata(p).map(|m| m.len() > MAX_FILE_BYTES).unwrap_or(false);
        if too_big {
            tracing::warn!("{} is larger than {MAX_FILE_BYTES} bytes: ignored", p.display());
            return store;
        }
        let Ok(text) = std::fs::read_to_string(p) else { return store };
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&text) else {
            tracing::warn!("{} is not a JSON object: ignored", p.display());
            return store;
        };
        let Some(Value::Array(list)) = m.get("peers") else { return store };
        for e in list.iter().take(MAX_PEERS) {
            let Some(id) = e.get("peer_id").and_then(Value::as_str).and_then(|s| s.parse().ok()) else {
                continue;
            };
            let addrs: Vec<Multiaddr> = e
                .get("addrs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str()?.parse::<Multiaddr>().ok())
                        .filter(rememberable)
                        .take(MAX_ADDRS)
                        .collect()
                })
                .unwrap_or_default();
            let seen = e.get("last_seen").and_then(Value::as_u64).unwrap_or(0);
            if !addrs.is_empty() {
                store.peers.insert(id, (addrs, seen));
            }
        }
        store
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// The remembered peers' dialable addresses (`.../p2p/<id>`), most recently seen first.
    pub fn dial_addrs(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut v: Vec<_> = self.peers.iter().map(|(p, (a, t))| (*p, a.clone(), *t)).collect();
        v.sort_by_key(|(_, _, t)| std::cmp::Reverse(*t));
        v.into_iter().map(|(p, a, _)| (p, a)).collect()
    }

    /// Notes that `peer` was reached at `addr` (a dialed address, or one it listens on).
    pub fn record(&mut self, peer: PeerId, addr: &Multiaddr, now_s: u64) {
        let addr: Multiaddr = addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
        if !rememberable(&addr) {
            return;
        }
        let e = self.peers.entry(peer).or_insert_with(|| (vec![], now_s));
        e.1 = now_s;
        e.0.retain(|a| a != &addr);
        e.0.insert(0, addr);
        e.0.truncate(MAX_ADDRS);
        self.dirty = true;
        if self.peers.len() > MAX_PEERS {
            if let Some(oldest) = self.peers.iter().min_by_key(|(_, (_, t))| *t).map(|(p, _)| *p) {
                self.peers.remove(&oldest);
            }
        }
    }

    /// Marks `peer` as seen now (still connected), without a new address; written with the
    /// next change or at shutdown, not every few seconds.
    pub fn touch(&mut self, peer: &PeerId, now_s: u64) {
        if let Some(e) = self.peers.get_mut(peer) {
            e.1 = now_s;
        }
    }

    /// Writes the file if anything changed, or always with `force` (atomically, mode 0600).
    pub fn save(&mut self, force: bool) {
        if !self.dirty && (!force || self.peers.is_empty()) {
            return;
        }
        let Some(path) = &self.path else { return };
        let list: Vec<Value> = self
            .dial_addrs()
            .into_iter()
            .map(|(p, a)| {
                json!({
                    "peer_id": p.to_string(),
                    "addrs": a.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                    "last_seen": self.peers.get(&p).map(|e| e.1).unwrap_or(0),
                })
            })
            .collect();
        let body = serde_json::to_vec_pretty(&json!({ "peers": list })).unwrap_or_default();
        let tmp = path.with_extension("json.tmp");
        let r = crate::write_private(&tmp, &body).and_then(|_| std::fs::rename(&tmp, path));
        match r {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::warn!("cannot write {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_filters_circuits() {
        let mut s = PeerStore { path: None, peers: HashMap::new(), dirty: false };
        let relay: Multiaddr =
            "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit".parse().unwrap();
        let p = PeerId::random();
        s.record(p, &relay, 1);
        assert_eq!(s.len(), 0);
        for i in 0..(MAX_PEERS + 10) {
            let a: Multiaddr = format!("/ip4/10.0.0.1/tcp/{}", 1000 + i).parse().unwrap();
            s.record(PeerId::random(), &a, i as u64);
        }
        assert_eq!(s.len(), MAX_PEERS);
        for i in 0..10 {
            let a: Multiaddr = format!("/ip4/10.0.0.2/tcp/{}", i).parse().unwrap();
            s.record(p, &a, 1000);
        }
        assert_eq!(s.peers[&p].0.len(), MAX_ADDRS);
        assert_eq!(s.dial_addrs()[0].0, p);
    }
}
