//! Connections per remote IP address, pending and established together, are bounded: one host
//! that opens a thousand idle TCP connections to the p2p port would otherwise use up the file
//! descriptors and lock every real peer out. A connection over the limit is refused before its
//! noise handshake starts (its socket is closed at once). Loopback is one address for every
//! local peer (tests, browser tabs): it gets the same limit, which is far above what they use.
//! Outbound connections (dials this node chose) are not counted.

use libp2p::{
    core::{transport::PortUse, Endpoint},
    multiaddr::Protocol,
    swarm::{
        behaviour::{ConnectionEstablished, ListenFailure},
        dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

/// Inbound connections (pending or established) from one IP address, by default
/// (`--max-conns-per-ip`: N daemons on one machine's loopback need more).
pub const MAX_PER_IP: usize = 32;

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

#[derive(Debug)]
pub struct TooManyFromIp(pub IpAddr);

impl std::fmt::Display for TooManyFromIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "too many connections from {}", self.0)
    }
}

impl std::error::Error for TooManyFromIp {}

pub struct Behaviour {
    by_connection: HashMap<ConnectionId, IpAddr>,
    per_ip: HashMap<IpAddr, usize>,
    max: usize,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour::new(MAX_PER_IP)
    }
}

impl Behaviour {
    pub fn new(max: usize) -> Self {
        Behaviour { by_connection: HashMap::new(), per_ip: HashMap::new(), max: max.max(1) }
    }

    fn release(&mut self, id: &ConnectionId) {
        if let Some(ip) = self.by_connection.remove(id) {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
    }

    #[cfg(test)]
    pub fn count(&self, ip: &IpAddr) -> usize {
        self.per_ip.get(ip).copied().unwrap_or(0)
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else {
            return Ok(()); // a relayed connection: its relay's own limits apply
        };
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n >= self.max {
            return Err(ConnectionDenied::new(TooManyFromIp(ip)));
        }
        *n += 1;
        self.by_connection.insert(connection_id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => self.release(&connection_id),
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => self.release(&connection_id),
            FromSwarm::ConnectionEstablished(ConnectionEstablished { .. }) => {}
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_at_most_the_limit_and_closed_ones_free_their_place() {
        let mut b = Behaviour::default();
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let from_a: Multiaddr = "/ip4/10.0.0.1/tcp/5555".parse().unwrap();
        let from_b: Multiaddr = "/ip4/10.0.0.2/tcp/5555".parse().unwrap();
        let ids: Vec<ConnectionId> = (0..MAX_PER_IP + 1).map(|_| ConnectionId::new_unchecked(rand_id())).collect();
        for id in &ids[..MAX_PER_IP] {
            assert!(b.handle_pending_inbound_connection(*id, &local, &from_a).is_ok());
        }
        assert!(b.handle_pending_inbound_connection(ids[MAX_PER_IP], &local, &from_a).is_err());
        assert!(b.handle_pending_inbound_connection(ConnectionId::new_unchecked(rand_id()), &local, &from_b).is_ok());
        b.release(&ids[0]);
        assert!(b.handle_pending_inbound_connection(ids[MAX_PER_IP], &local, &from_a).is_ok());
        assert_eq!(b.count(&"10.0.0.1".parse().unwrap()), MAX_PER_IP);
    }

    fn rand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1_000_000);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}
