//! The libp2p swarm and the one event loop task that owns it.

use crate::util::{self, LocalInfo, RateLimiter, ResultStore, StoredResult};
use crate::{
    connmgr,
    peerstore::PeerStore,
    providers::Providers,
    reach::{self, Reach},
    routing,
};
use futures::StreamExt;
use libp2p::{
    autonat,
    core::ConnectedPoint,
    dcutr, gossipsub, identify, identity, kad, mdns,
    multiaddr::Protocol,
    noise, ping, relay,
    request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel},
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm,
};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};

pub const TOPIC_WORK: &str = "shard-work";
pub const TOPIC_RESULT: &str = "shard-work-result";
pub const PROTO_HANDSHAKE: &str = "/shard/1.0.0/handshake";
pub const PROTO_VERIFY: &str = "/shard/oracle/verify/1.0.0";
pub const PROTO_WORK: &str = "/shard/work/1.0.0";
pub const PROTO_KAD: &str = "/shard/kad/1.0.0";
pub const IDENTIFY_PROTOCOL: &str = "/shard/id/1.0.0";
/// How long an Oracle waits for the node's `POST /verify-response`.
pub const VERIFY_ANSWER_DEADLINE: Duration = Duration::from_secs(5);
/// Most inbound verify requests waiting for the node at once.
pub const MAX_PENDING_VERIFY: usize = 1024;
/// Most outbound requests (verify, work) in flight at once.
pub const MAX_PENDING_OUTBOUND: usize = 4096;
/// Swarm events kept while the listeners come up (connections from peers that found us early).
const MAX_EARLY_EVENTS: usize = 4096;
/// Most connected peers; more are disconnected.
pub const MAX_PEERS: usize = 256;
/// Gossipsub's send queue per peer (publish + forward slots; control messages are unbounded).
pub const GOSSIP_QUEUE_LEN: usize = 256;
/// Between two Kademlia routing table refreshes (a walk dials peers we are not connected to, which
/// then sit above their targets and prune: the library's own every 5 min churned the mesh).
pub const KAD_REFRESH: Duration = Duration::from_secs(1800);
/// Between two housekeeping turns (expiries); every fifth one also prunes and saves (`maintain`).
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Most inbound connections still in their noise handshake at once.
pub const MAX_PENDING_INCOMING: u32 = 128;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    relay_client: relay::client::Behaviour,
    ping: ping::Behaviour,
    identify: identify::Behaviour,
    gossipsub: gossipsub::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    mdns: Toggle<mdns::tokio::Behaviour>,
    dcutr: dcutr::Behaviour,
    autonat: autonat::Behaviour,
    relay: Toggle<relay::Behaviour>,
    handshake: request_response::json::Behaviour<Value, Value>,
    verify: request_response::json::Behaviour<Value, Value>,
    work: request_response::json::Behaviour<Value, Value>,
    infer: libp2p_stream::Behaviour,
    /// Inbound connections per IP address (a flood of idle sockets from one host).
    ip_limits: crate::ip_limits::Behaviour,
    /// Handshakes in progress at once (a flood from many hosts); established peers are capped by MAX_PEERS.
    limits: libp2p::connection_limits::Behaviour,
}

/// Counters shown by `GET /stats`.
#[derive(Default)]
pub struct Stats {
    pub dropped_oversize: AtomicU64,
    pub dropped_rate: AtomicU64,
    pub dropped_invalid: AtomicU64,
    pub work_received: AtomicU64,
    pub results_received: AtomicU64,
    pub verify_requests: AtomicU64,
    pub verify_timeouts: AtomicU64,
    pub events_lagged: AtomicU64,
    pub infer_requests: AtomicU64,
    pub infer_dropped: AtomicU64,
    pub infer_unanswered: AtomicU64,
    pub infer_asker_gone: AtomicU64,
    pub infer_outbound: AtomicU64,
    /// What the event loop does (bench/mesh_scale.py reads these to find where time and
    /// connections go): swarm events handled and the time spent handling them and commands.
    pub swarm_events: AtomicU64,
    pub loop_busy_us: AtomicU64,
    /// Connections opened (we dialed / they dialed) and closed (by our pruning, by the idle
    /// timeout, by an I/O error or the remote closing, by us otherwise).
    pub conns_out: AtomicU64,
    pub conns_in: AtomicU64,
    pub closed_pruned: AtomicU64,
    pub closed_idle: AtomicU64,
    pub closed_remote: AtomicU64,
    pub closed_local: AtomicU64,
    /// Dials we started: bootstrap redials, discovery (Kademlia routing updates, mDNS).
    pub dials_bootstrap: AtomicU64,
    pub dials_discovery: AtomicU64,
    /// Kademlia bootstraps (random walks) finished: ours and the library's automatic ones; each
    /// dials peers we are not connected to.
    pub kad_walks: AtomicU64,
    /// Bootstrap steps (bucket refreshes) ended before they dialed anyone (routing.rs).
    pub kad_steps_cut: AtomicU64,
    /// Dials of peers from the routing table while below the low watermark (instead of a walk).
    pub dials_table: AtomicU64,
}

impl Stats {
    pub fn to_json(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "dropped_oversize": g(&self.dropped_oversize),
            "dropped_rate": g(&self.dropped_rate),
            "dropped_invalid": g(&self.dropped_invalid),
            "work_received": g(&self.work_received),
            "results_received": g(&self.results_received),
            "verify_requests": g(&self.verify_requests),
            "verify_timeouts": g(&self.verify_timeouts),
            "events_lagged": g(&self.events_lagged),
            "infer_requests": g(&self.infer_requests),
            "infer_dropped": g(&self.infer_dropped),
            "infer_unanswered": g(&self.infer_unanswered),
            "infer_asker_gone": g(&self.infer_asker_gone),
            "infer_outbound": g(&self.infer_outbound),
            "swarm_events": g(&self.swarm_events),
            "loop_busy_ms": g(&self.loop_busy_us) / 1000,
            "connections": {
                "opened_out": g(&self.conns_out),
                "opened_in": g(&self.conns_in),
                "closed_pruned": g(&self.closed_pruned),
                "closed_idle": g(&self.closed_idle),
                "closed_remote": g(&self.closed_remote),
                "closed_local": g(&self.closed_local),
                "dials_bootstrap": g(&self.dials_bootstrap),
                "dials_discovery": g(&self.dials_discovery),
                "kad_walks": g(&self.kad_walks),
                "kad_steps_cut": g(&self.kad_steps_cut),
                "dials_table": g(&self.dials_table),
            },
        })
    }
}

/// What woke the event loop (one lives for one turn, on the stack: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Wake {
    Swarm(Box<SwarmEvent<BehaviourEvent>>),
    Command(Option<Command>),
    Housekeeping,
    Reconnect,
    KadRefresh,
}

pub type Reply<T> = oneshot::Sender<T>;
/// Result of one outbound request: the response, or an error text.
pub type Pending = oneshot::Receiver<Result<Value, String>>;
/// Work sent directly: a pending ack per connected peer, and the peers it could not reach.
pub type WorkSent = (Vec<(PeerId, Pending)>, Vec<PeerId>);

pub enum Command {
    Health(Reply<Value>),
    Topology(Reply<Value>),
    Peers(Reply<Value>),
    SetLocalInfo(LocalInfo, Reply<()>),
    /// Publish on a topic; replies `{"published","delivered_to","reason"?}`.
    Publish {
        topic: &'static str,
        data: Vec<u8>,
        reply: Reply<Value>,
    },
    /// Publish a work item on its model's topic and/or the shared one (crate::topics).
    PublishWork {
        work: Value,
        data: Vec<u8>,
        reply: Reply<Value>,
    },
    /// Subscribe to the work topics of these models (empty: the shared topic).
    SetWorkTopics(Vec<String>, Reply<Result<Value, String>>),
    /// Direct work to peers: replies with a pending ack per connected peer and the others.
    SendWork {
        peers: Vec<PeerId>,
        work: Value,
        reply: Reply<WorkSent>,
    },
    SendVerify {
        peer: PeerId,
        request: Value,
        reply: Reply<Result<Pending, String>>,
    },
    VerifyResponse {
        request_id: String,
        response: Value,
        reply: Reply<Result<(), String>>,
    },
    PopResults(String, Reply<Vec<StoredResult>>),
    /// Whether a connection to the peer is open.
    IsConnected(PeerId, Reply<bool>),
    /// Kademlia provider lookup for a model: the Oracles found (dialed as they are found).
    FindProviders(String, crate::providers::FoundReply),
    Shutdown,
}

struct PeerState {
    /// connection id -> remote address
    conns: HashMap<libp2p::swarm::ConnectionId, Multiaddr>,
    connected_since: u64,
    latency_ms: Option<f64>,
    info: Option<LocalInfo>,
    /// unix seconds of the last request to or from it (connection management keeps it)
    last_used: u64,
    /// we dialed its first connection (a walk's dials are trimmed right after it: connmgr.rs)
    dialed: bool,
}

pub struct Ports {
    pub tcp: u16,
    pub ws: u16,
    pub quic: u16,
    /// UDP port of the WebRTC-direct listener; None: off
    pub webrtc: Option<u16>,
}

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<Value>,
    stats: Arc<Stats>,
    local_info: LocalInfo,
    peers: HashMap<PeerId, PeerState>,
    listen_addrs: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    reconnect: Duration,
    results: ResultStore,
    limiter: Arc<std::sync::Mutex<RateLimiter>>,
    /// Bytes of work accepted per peer and in all (work_budget.rs)
    work_bytes: crate::work_budget::WorkBudget,
    pending_out: HashMap<OutboundRequestId, oneshot::Sender<Result<Value, String>>>,
    pending_verify: HashMap<String, (ResponseChannel<Value>, Instant)>,
    next_verify_id: u64,
    version: &'static str,
    pub ports: Ports,
    peerstore: PeerStore,
    providers: Providers,
    reach: Reach,
    limits: connmgr::Limits,
    /// our half-hourly full bootstrap (every other one is cut to its first step: routing.rs)
    kad_refresh: Option<kad::QueryId>,
    ticks: u64,
    /// peers we are disconnecting to prune (the close is counted as pruning)
    pruning: HashSet<PeerId>,
    work_topics: crate::topics::WorkTopics,
}

pub struct NetConfig {
    pub keypair: identity::Keypair,
    pub listen_host: IpAddr,
    pub tcp_port: u16,
    pub ws_port: u16,
    pub strict_ports: bool,
    pub mdns: bool,
    pub bootstrap: Vec<Multiaddr>,
    pub reconnect: Duration,
    pub version: &'static str,
    pub limiter: Arc<std::sync::Mutex<RateLimiter>>,
    pub data_dir: Option<std::path::PathBuf>,
    pub target_peers: usize,
    /// Inbound connections accepted from one IP address (ip_limits.rs)
    pub max_conns_per_ip: usize,
    pub relay_server: bool,
    /// AutoNAT treats private IP addresses as reachable (tests in namespaces, LANs)
    pub reach_private: bool,
    /// Origins a browser may open the WebSocket listener from (origin.rs)
    pub allowed_origins: Vec<String>,
    /// The WebRTC-direct listener (webrtc_direct.rs); None: off
    pub webrtc: Option<crate::webrtc_direct::Listen>,
}

fn rr_config(timeout: Duration) -> request_response::Config {
    request_response::Config::default().with_request_timeout(timeout).with_max_concurrent_streams(256)
}

async fn build_swarm(cfg: &NetConfig) -> Result<Swarm<Behaviour>, String> {
    let mdns_on = cfg.mdns;
    let version = cfg.version;
    let (relay_server, reach_private) = (cfg.relay_server, cfg.reach_private);
    let max_per_ip = cfg.max_conns_per_ip;
    let allowed_origins = cfg.allowed_origins.clone();
    let webrtc_cert = cfg.webrtc.as_ref().map(|w| w.cert.clone());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(cfg.keypair.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| format!("tcp transport: {e}"))?
        .with_quic()
        .with_other_transport(|key| crate::origin::websocket_transport(key, &allowed_origins))
        .map_err(|e| format!("websocket transport: {e}"))?
        .with_other_transport(|key| crate::webrtc_direct::transport(key, webrtc_cert))
        .map_err(|e| format!("webrtc-direct transport: {e:?}"))?
        .with_dns()
        .map_err(|e| format!("dns: {e}"))?;
    let swarm = swarm
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| format!("relay client: {e}"))?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            let gs_config = gossipsub::ConfigBuilder::default()
                .max_transmit_size(util::MAX_MESSAGE_BYTES)
                .validation_mode(gossipsub::ValidationMode::Strict)
                .validate_messages()
                .heartbeat_interval(Duration::from_secs(1))
                // the library preallocates half this many slots per connected peer (5000 by
                // default: ~0.5 MB resident per peer); our traffic is a few messages a second
                .connection_handler_queue_len(GOSSIP_QUEUE_LEN)
                // a bounded mesh (docs/scale.md): each node forwards to ~D peers, not to all
                .mesh_n(6)
                .mesh_n_low(4)
                .mesh_n_high(12)
                .build()
                .map_err(|e| format!("gossipsub config: {e}"))?;
            let mut gossipsub =
                gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gs_config)
                    .map_err(|e| format!("gossipsub: {e}"))?;
            let (params, thresholds) = score_params();
            gossipsub.with_peer_score(params, thresholds).map_err(|e| format!("peer score: {e}"))?;
            // manual inserts, no periodic walk (routing.rs)
            let kad_cfg = routing::config(PROTO_KAD);
            let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
            kad.set_mode(Some(kad::Mode::Server));
            let mdns = if mdns_on {
                match mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!("mDNS unavailable, continuing without it: {e}");
                        None
                    }
                }
            } else {
                None
            };
            let rr = |p: &'static str, t: u64| {
                request_response::json::Behaviour::<Value, Value>::new(
                    [(StreamProtocol::new(p), ProtocolSupport::Full)],
                    rr_config(Duration::from_secs(t)),
                )
            };
            Ok(Behaviour {
                relay_client,
                ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(15))),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                        .with_agent_version(format!("shard-daemon/{version}"))
                        // a relay reservation adds a circuit address: peers (and the DHT) must learn it
                        .with_push_listen_addr_updates(true),
                ),
                gossipsub,
                kad,
                mdns: Toggle::from(mdns),
                dcutr: dcutr::Behaviour::new(peer_id),
                autonat: autonat::Behaviour::new(
                    peer_id,
                    autonat::Config {
                        boot_delay: Duration::from_secs(3),
                        retry_interval: Duration::from_secs(20),
                        throttle_server_period: Duration::from_secs(15),
                        only_global_ips: !reach_private,
                        ..Default::default()
                    },
                ),
                // served only once AutoNAT confirms a public address (the relay hands out its
                // external addresses); the library's default limits on reservations and circuits
                relay: Toggle::from(relay_server.then(|| relay::Behaviour::new(peer_id, relay::Config::default()))),
                handshake: rr(PROTO_HANDSHAKE, 10),
                verify: rr(PROTO_VERIFY, 15),
                work: rr(PROTO_WORK, 10),
                infer: libp2p_stream::Behaviour::new(),
                ip_limits: crate::ip_limits::Behaviour::new(max_per_ip),
                limits: libp2p::connection_limits::Behaviour::new(
                    libp2p::connection_limits::ConnectionLimits::default()
                        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING)),
                ),
            })
        })
        .map_err(|e| format!("behaviour: {e}"))?
        .with_swarm_config(|c| {
            // A new stream (every request: a draft, a progress message, a verdict) sends its data
            // with its protocol's name instead of waiting a round trip for the peer to confirm it
            // (multistream-select's V1Lazy; a peer that refuses the protocol fails the request as
            // before). Measured at 20 ms RTT: a scout's draft reached the Oracle 45 ms after it was
            // sent (1.5 round trips; at 0 ms, 11 ms); with V1Lazy, 21 ms.
            c.with_idle_connection_timeout(Duration::from_secs(300))
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();
    Ok(swarm)
}

/// Peer scoring: a mild reward for time in the mesh and first deliveries, a strong penalty
/// for invalid messages. Mesh delivery-rate penalties are off (traffic is bursty and low).
fn score_params() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let mut params = gossipsub::PeerScoreParams::default();
    // many local peers (tests, a browser tab) share 127.0.0.1
    params.ip_colocation_factor_whitelist.insert("127.0.0.1".parse().unwrap());
    params.ip_colocation_factor_whitelist.insert("::1".parse().unwrap());
    for t in [TOPIC_WORK, TOPIC_RESULT] {
        let tp = gossipsub::TopicScoreParams {
            topic_weight: 1.0,
            time_in_mesh_weight: 0.01,
            time_in_mesh_quantum: Duration::from_secs(1),
            time_in_mesh_cap: 3600.0,
            first_message_deliveries_weight: 1.0,
            first_message_deliveries_decay: 0.5,
            first_message_deliveries_cap: 100.0,
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            invalid_message_deliveries_weight: -10.0,
            invalid_message_deliveries_decay: 0.5,
            ..Default::default()
        };
        params.topics.insert(gossipsub::IdentTopic::new(t).hash(), tp);
    }
    (params, gossipsub::PeerScoreThresholds::default())
}

fn port_free(ip: IpAddr, port: u16, kind: Kind) -> std::io::Result<()> {
    if port == 0 {
        return Ok(());
    }
    match kind {
        Kind::Quic | Kind::WebRtc => std::net::UdpSocket::bind((ip, port)).map(drop),
        _ => std::net::TcpListener::bind((ip, port)).map(drop),
    }
}

fn free_tcp_port(ip: IpAddr) -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind((ip, 0))?;
    Ok(l.local_addr()?.port())
}

fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

fn strip_p2p(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut out = Multiaddr::empty();
    let mut peer = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(id) => peer = Some(id),
            other => out.push(other),
        }
    }
    (out, peer)
}

#[derive(PartialEq, Eq, Hash, Clone, Copy, Debug)]
enum Kind {
    Tcp,
    Ws,
    Quic,
    WebRtc,
    Other,
}

fn addr_kind(addr: &Multiaddr) -> (Kind, u16) {
    let mut port = 0;
    let mut kind = Kind::Other;
    for p in addr.iter() {
        match p {
            Protocol::Tcp(n) => {
                port = n;
                kind = Kind::Tcp
            }
            Protocol::Udp(n) => port = n,
            Protocol::Ws(_) => kind = Kind::Ws,
            Protocol::QuicV1 => kind = Kind::Quic,
            Protocol::WebRTCDirect => kind = Kind::WebRtc,
            Protocol::P2pCircuit => return (Kind::Other, 0),
            _ => {}
        }
    }
    (kind, port)
}

impl EventLoop {
    /// Builds the swarm and binds all listeners (falling back to OS ports when busy).
    pub async fn new(
        cfg: NetConfig,
        commands: mpsc::Receiver<Command>,
        events: broadcast::Sender<Value>,
        stats: Arc<Stats>,
    ) -> Result<EventLoop, (i32, String)> {
        let mut swarm = build_swarm(&cfg).await.map_err(|e| (1, e))?;
        for t in [TOPIC_WORK, TOPIC_RESULT] {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&gossipsub::IdentTopic::new(t))
                .map_err(|e| (1, format!("subscribe {t}: {e}")))?;
        }
        let ip = match cfg.listen_host {
            IpAddr::V4(v) => Protocol::Ip4(v),
            IpAddr::V6(v) => Protocol::Ip6(v),
        };
        let mk = |kind: Kind, port: u16| -> Multiaddr {
            let a = Multiaddr::empty().with(ip.clone());
            match kind {
                Kind::Tcp => a.with(Protocol::Tcp(port)),
                Kind::Ws => a.with(Protocol::Tcp(port)).with(Protocol::Ws("/".into())),
                Kind::WebRtc => a.with(Protocol::Udp(port)).with(Protocol::WebRTCDirect),
                _ => a.with(Protocol::Udp(port)).with(Protocol::QuicV1),
            }
        };
        let mut listeners = HashMap::new();
        // The TCP port actually used; QUIC takes the same number on UDP when it can.
        let mut tcp_chosen = 0u16;
        let mut fallbacks = vec![];
        let mut kinds = vec![
            (Kind::Tcp, cfg.tcp_port, "tcp"),
            (Kind::Ws, cfg.ws_port, "ws"),
            (Kind::Quic, cfg.tcp_port, "quic (udp)"),
        ];
        kinds.extend(cfg.webrtc.as_ref().map(|w| (Kind::WebRtc, w.port, "webrtc-direct (udp)")));
        for (kind, requested, name) in kinds {
            // QUIC: try the TCP port number first; only an explicit request is strict.
            let (port, strict) = match kind {
                Kind::Quic if tcp_chosen != requested => (tcp_chosen, false),
                Kind::WebRtc => (requested, cfg.strict_ports && cfg.webrtc.as_ref().is_some_and(|w| w.explicit)),
                _ => (requested, cfg.strict_ports),
            };
            // libp2p's TCP listener sets SO_REUSEPORT, so a second process could bind the
            // same port and share its connections: probe with a plain socket first.
            let try_port = |swarm: &mut Swarm<Behaviour>, port: u16| {
                port_free(cfg.listen_host, port, kind)
                    .and_then(|_| swarm.listen_on(mk(kind, port)).map_err(|e| std::io::Error::other(e.to_string())))
            };
            let first = if port == 0 && kind == Kind::Tcp {
                // pick the number ourselves so QUIC can follow it
                free_tcp_port(cfg.listen_host).and_then(|p| {
                    tcp_chosen = p;
                    try_port(&mut swarm, p)
                })
            } else {
                if kind == Kind::Tcp {
                    tcp_chosen = port;
                }
                try_port(&mut swarm, port)
            };
            let id = match first {
                Ok(id) => id,
                Err(e) if port != 0 => {
                    if strict {
                        return Err((
                            2,
                            format!(
                                "{name} port {port} is not available ({e}); \
                                 --strict-ports is set, so not falling back"
                            ),
                        ));
                    }
                    let fallback = if kind == Kind::Tcp { free_tcp_port(cfg.listen_host).unwrap_or(0) } else { 0 };
                    let id = try_port(&mut swarm, fallback)
                        .or_else(|_| try_port(&mut swarm, 0))
                        .map_err(|e| (1, format!("cannot listen for {name}: {e}")))?;
                    if kind == Kind::Tcp {
                        tcp_chosen = fallback;
                    }
                    fallbacks.push((kind, name, port, e.to_string()));
                    id
                }
                Err(e) => return Err((1, format!("cannot listen for {name}: {e}"))),
            };
            listeners.insert(id, kind);
        }
        // Wait until every listener reports its address.
        let mut ports: HashMap<Kind, u16> = HashMap::new();
        let mut listen_addrs = vec![];
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        let mut settle: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        // Peers may connect while the listeners come up (mDNS runs from the start, and a peer
        // that found this node dials at once): their events are kept and handled once the event
        // loop exists, or the connection would live on with no handshake and no peer entry.
        let mut early: Vec<SwarmEvent<BehaviourEvent>> = vec![];
        loop {
            tokio::select! {
                ev = swarm.select_next_some() => {
                    match ev {
                        SwarmEvent::NewListenAddr { listener_id, address } => {
                            if let Some(kind) = listeners.get(&listener_id) {
                                let (_, port) = addr_kind(&address);
                                ports.insert(*kind, port);
                                if !listen_addrs.contains(&address) { listen_addrs.push(address); }
                            }
                            if ports.len() == listeners.len() && settle.is_none() {
                                settle = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
                            }
                        }
                        SwarmEvent::ListenerError { error, .. } => {
                            return Err((1, format!("listener error: {error}")));
                        }
                        SwarmEvent::ListenerClosed { reason: Err(e), .. } => {
                            return Err((1, format!("listener closed: {e}")));
                        }
                        other if early.len() < MAX_EARLY_EVENTS => early.push(other),
                        _ => tracing::warn!("more than {MAX_EARLY_EVENTS} swarm events before the listeners were up: one dropped"),
                    }
                }
                _ = async { settle.as_mut().unwrap().await }, if settle.is_some() => break,
                _ = &mut deadline => return Err((1, "listeners did not report addresses within 10 s".into())),
            }
        }
        for (kind, name, port, e) in fallbacks {
            tracing::warn!("{name} port {port} is not available ({e}); using port {} instead", ports[&kind]);
        }
        for a in &listen_addrs {
            tracing::info!("listening on {a}");
        }
        let ports = Ports {
            tcp: ports[&Kind::Tcp],
            ws: ports[&Kind::Ws],
            quic: ports[&Kind::Quic],
            webrtc: ports.get(&Kind::WebRtc).copied(),
        };
        let mut el = EventLoop {
            swarm,
            commands,
            events,
            stats,
            local_info: LocalInfo::default_for(cfg.version),
            peers: HashMap::new(),
            listen_addrs,
            bootstrap: cfg.bootstrap,
            reconnect: cfg.reconnect,
            results: ResultStore::default(),
            limiter: cfg.limiter.clone(),
            work_bytes: crate::work_budget::limiter(),
            pending_out: HashMap::new(),
            pending_verify: HashMap::new(),
            next_verify_id: 1,
            version: cfg.version,
            ports,
            peerstore: PeerStore::load(cfg.data_dir.as_deref()),
            providers: Providers::default(),
            reach: Reach::new(cfg.relay_server),
            limits: connmgr::Limits::new(cfg.target_peers),
            kad_refresh: None,
            ticks: 0,
            pruning: HashSet::new(),
            work_topics: Default::default(),
        };
        for ev in early {
            el.on_swarm_event(ev);
        }
        el.dial_bootstrap();
        el.dial_remembered();
        Ok(el)
    }

    /// A handle for opening and accepting raw streams (`/shard/infer/1.0.0`).
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.swarm.behaviour().infer.new_control()
    }

    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    fn with_p2p(&self, a: &Multiaddr) -> Multiaddr {
        a.clone().with(Protocol::P2p(self.peer_id()))
    }

    pub fn listen_addrs_p2p(&self) -> Vec<String> {
        let mut v: Vec<&Multiaddr> = self.listen_addrs.iter().collect();
        v.sort_by_key(|a| !is_loopback(a));
        v.into_iter().map(|a| self.with_p2p(a).to_string()).collect()
    }

    fn dial_bootstrap(&mut self) {
        let addrs = self.bootstrap.clone();
        for a in addrs {
            let (bare, peer) = strip_p2p(&a);
            if let Some(p) = peer {
                if p == self.peer_id() {
                    continue;
                }
                routing::add(&mut self.swarm.behaviour_mut().kad, &p, bare.clone());
                if self.swarm.is_connected(&p) {
                    continue;
                }
            } else if self.peers.values().any(|s| s.conns.values().any(|c| c == &bare)) {
                continue;
            }
            self.stats.dials_bootstrap.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.swarm.dial(a.clone()) {
                tracing::debug!("dial bootstrap {a}: {e}");
            }
        }
    }

    fn emit(&self, v: Value) {
        // No receivers is fine; lagging receivers are handled by the SSE side.
        let _ = self.events.send(v);
    }

    pub async fn run(mut self) {
        let mut reconnect = tokio::time::interval(self.reconnect);
        reconnect.tick().await;
        // once a second: each wake-up polls every behaviour, and at 4/s an idle daemon with no
        // peers spent 0.3% of a core (bench/mesh_scale.py: idle CPU); deadlines here are 5 s
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut kad_refresh = tokio::time::interval(KAD_REFRESH);
        kad_refresh.tick().await;
        let mut kad_bootstrapped = false;
        loop {
            // The swarm is no tokio resource, so tokio's cooperative budget never makes a busy
            // swarm yield: spend a unit per turn, and the control API's tasks on this thread get
            // their turn after every budget's worth of events (issue 15: at N=100 the API went
            // unanswered for over 10 s).
            tokio::task::coop::consume_budget().await;
            let stats = self.stats.clone();
            let swarm = &mut self.swarm;
            // time in the swarm's own poll (its behaviours) counts as busy too
            let next = futures::future::poll_fn(|cx| {
                let t = Instant::now();
                let r = swarm.poll_next_unpin(cx);
                stats.loop_busy_us.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                r
            });
            // biased: a command from the control API goes before the swarm's next event
            let wake = tokio::select! {
                biased;
                cmd = self.commands.recv() => Wake::Command(cmd),
                _ = housekeeping.tick() => Wake::Housekeeping,
                _ = reconnect.tick() => Wake::Reconnect,
                _ = kad_refresh.tick() => Wake::KadRefresh,
                ev = next => match ev {
                    Some(ev) => Wake::Swarm(Box::new(ev)),
                    None => Wake::Command(None),
                },
            };
            let t = Instant::now();
            match wake {
                Wake::Swarm(ev) => {
                    self.stats.swarm_events.fetch_add(1, Ordering::Relaxed);
                    let first_conn = matches!(*ev, SwarmEvent::ConnectionEstablished { .. });
                    self.on_swarm_event(*ev);
                    if first_conn && !kad_bootstrapped {
                        kad_bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
                    }
                }
                Wake::Command(Some(Command::Shutdown) | None) => {
                    tracing::info!("event loop stopping");
                    self.peerstore.save(true);
                    return;
                }
                Wake::Command(Some(c)) => self.on_command(c),
                Wake::Reconnect => {
                    // below the low watermark only: a bootstrap node that pruned us is not
                    // redialed while we have other peers (it would prune us again: churn)
                    let mut from_table = 0;
                    if self.limits.may_dial(self.peers.len()) {
                        self.dial_bootstrap();
                        from_table = self.dial_from_table();
                    }
                    // a random walk finds peers that joined (or became reachable) since; only
                    // when the routing table has no one left to dial (a walk dials tens)
                    if from_table == 0 && self.limits.may_walk(self.peers.len(), util::now_s()) {
                        // one lookup of our own id (a bootstrap also refreshes every bucket: at
                        // N=100 it dialed ~65 peers)
                        let me = self.peer_id();
                        self.swarm.behaviour_mut().kad.get_closest_peers(me);
                    }
                    if self.peers.is_empty() {
                        self.dial_remembered();
                    }
                }
                Wake::Housekeeping => self.housekeeping(),
                Wake::KadRefresh => {
                    self.kad_refresh = self.swarm.behaviour_mut().kad.bootstrap().ok();
                }
            }
            self.stats.loop_busy_us.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .pending_verify
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) >= VERIFY_ANSWER_DEADLINE)
            .map(|(k, _)| k.clone())
            .collect();
        for id in expired {
            if let Some((ch, _)) = self.pending_verify.remove(&id) {
                self.stats.verify_timeouts.fetch_add(1, Ordering::Relaxed);
                let _ = self.swarm.behaviour_mut().verify.send_response(ch, json!({"error": "timeout"}));
            }
        }
        self.results.expire(now);
        {
            let mut l = self.limiter.lock().unwrap();
            if l.len() > 1024 {
                l.prune(now);
            }
        }
        self.pending_out.retain(|_, tx| !tx.is_closed());
        self.ticks += 1;
        if self.ticks.is_multiple_of(5) {
            self.maintain();
        }
    }

    /// Our handshake for `peer`: with a pairing key, the proof made for that peer.
    fn local_info_value(&self, peer: &PeerId) -> Value {
        let mut v = self.local_info.to_value();
        if let (Some(key), Value::Object(m)) = (&self.local_info.pair_key, &mut v) {
            m.insert("pair".into(), json!(util::pair_proof(key, &self.peer_id(), peer)));
        }
        v
    }

    fn peer_json(&self, id: &PeerId, s: &PeerState) -> Value {
        let info = s.info.clone();
        // a dialed address may already end in /p2p/<id>: name each address with it exactly once
        let addrs: Vec<String> =
            s.conns.values().map(|a| strip_p2p(a).0.with(Protocol::P2p(*id)).to_string()).collect();
        json!({
            "peer_id": id.to_string(),
            "addrs": addrs,
            "roles": info.as_ref().map(|i| i.roles.clone()).unwrap_or_default(),
            "models": info.as_ref().map(|i| i.models.clone()).unwrap_or_default(),
            "capacity": info.as_ref().map(|i| i.capacity),
            "load": info.as_ref().map(|i| i.load),
            "agent": info.as_ref().map(|i| i.agent.clone()),
            "protocol_version": info.as_ref().map(|i| i.protocol_version),
            "draft_model": info.as_ref().and_then(|i| i.draft_model.clone()),
            "handshake": info.is_some(),
            "latency_ms": s.latency_ms,
            "path": self.path_of(id, s),
            "connected_since": s.connected_since,
            "local": s.conns.values().any(is_loopback),
            "pair": info.as_ref().and_then(|i| i.pair.clone()),
        })
    }

    /// Publishes on a topic: `{"published","delivered_to","reason"?}`.
    fn publish(&mut self, t: gossipsub::IdentTopic, data: Vec<u8>) -> Value {
        let hash = t.hash();
        let subscribed: Vec<String> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, ts)| ts.contains(&&hash))
            .map(|(p, _)| p.to_string())
            .collect();
        let out = match self.swarm.behaviour_mut().gossipsub.publish(t, data) {
            Ok(_) => json!({"published": true, "delivered_to": subscribed}),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => json!({
                "published": false, "delivered_to": [], "reason": "no peers subscribed"
            }),
            Err(gossipsub::PublishError::AllQueuesFull(n)) => json!({
                "published": false, "delivered_to": [],
                "reason": format!("send queues of all {n} peers are full")
            }),
            Err(gossipsub::PublishError::Duplicate) => json!({
                "published": false, "delivered_to": [], "reason": "duplicate message"
            }),
            Err(gossipsub::PublishError::MessageTooLarge) => json!({
                "published": false, "delivered_to": [], "reason": "message too large"
            }),
            Err(e) => json!({"published": false, "delivered_to": [], "reason": e.to_string()}),
        };
        out
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Health(r) => {
                let _ = r.send(json!({
                    "status": "ok",
                    "peer_id": self.peer_id().to_string(),
                    "version": self.version,
                    "peers": self.peers.len(),
                    "pending_results": self.results.total(),
                    "pending_result_bytes": self.results.bytes(),
                    "pending_verify": self.pending_verify.len(),
                }));
            }
            Command::Topology(r) => {
                let me = self.peer_id();
                let all = self.listen_addrs_p2p();
                let pick = |k: Kind| -> Vec<String> {
                    let mut v: Vec<&Multiaddr> = self.listen_addrs.iter().filter(|a| addr_kind(a).0 == k).collect();
                    v.sort_by_key(|a| !is_loopback(a));
                    v.into_iter().map(|a| a.clone().with(Protocol::P2p(me)).to_string()).collect()
                };
                let _ = r.send(json!({
                    "peer_id": me.to_string(),
                    "listen_addrs": all,
                    "tcp_addrs": pick(Kind::Tcp),
                    "ws_addrs": pick(Kind::Ws),
                    "quic_addrs": pick(Kind::Quic),
                    "webrtc_addrs": pick(Kind::WebRtc),
                    "tcp_port": self.ports.tcp,
                    "ws_port": self.ports.ws,
                    "quic_port": self.ports.quic,
                    "webrtc_port": self.ports.webrtc,
                    "reachability": self.reach.to_json(),
                    "provided_models": self.providers.provided(),
                    "target_peers": self.limits.target,
                    "gossip_mesh_peers": self.swarm.behaviour().gossipsub
                        .mesh_peers(&gossipsub::IdentTopic::new(TOPIC_WORK).hash()).count(),
                    "remembered_peers": self.peerstore.len(),
                    "work_topics": self.work_topics.to_json(),
                }));
            }
            Command::Peers(r) => {
                let mut v: Vec<(&PeerId, &PeerState)> = self.peers.iter().collect();
                v.sort_by_key(|(_, s)| s.connected_since);
                let list: Vec<Value> = v.into_iter().map(|(id, s)| self.peer_json(id, s)).collect();
                let _ = r.send(json!({ "peers": list }));
            }
            Command::SetLocalInfo(info, r) => {
                let models: Vec<String> =
                    if info.roles.iter().any(|r| r == "oracle") { info.models.clone() } else { vec![] };
                self.providers.set_models(&mut self.swarm.behaviour_mut().kad, &models);
                self.local_info = info;
                let peers: Vec<PeerId> = self.peers.keys().copied().collect();
                for p in peers {
                    let body = self.local_info_value(&p);
                    self.swarm.behaviour_mut().handshake.send_request(&p, body);
                }
                let _ = r.send(());
            }
            Command::Publish { topic, data, reply } => {
                let out = self.publish(gossipsub::IdentTopic::new(topic), data);
                let _ = reply.send(out);
            }
            Command::PublishWork { work, data, reply } => {
                let gs = &self.swarm.behaviour().gossipsub;
                let topics = crate::topics::publish_topics(&work, |h| gs.all_peers().any(|(_, ts)| ts.contains(&h)));
                let mut delivered: Vec<Value> = vec![];
                let mut out = json!({});
                for t in topics {
                    let name = t.to_string();
                    out = self.publish(t, data.clone());
                    if out["published"] == json!(true) {
                        delivered.extend(out["delivered_to"].as_array().cloned().unwrap_or_default());
                        out["topic"] = json!(name);
                    }
                }
                if !delivered.is_empty() {
                    out = json!({"published": true, "delivered_to": delivered});
                }
                let _ = reply.send(out);
            }
            Command::SetWorkTopics(models, reply) => {
                let r = self.work_topics.set(&mut self.swarm.behaviour_mut().gossipsub, models);
                let _ = reply.send(r.map(|_| self.work_topics.to_json()));
            }
            Command::SendWork { peers, work, reply } => {
                let mut pending = vec![];
                let mut not_connected = vec![];
                let mut seen = HashSet::new();
                for p in peers {
                    if !seen.insert(p) {
                        continue;
                    }
                    if !self.peers.contains_key(&p) || self.pending_out.len() >= MAX_PENDING_OUTBOUND {
                        not_connected.push(p);
                        continue;
                    }
                    self.mark_used(&p);
                    let id = self.swarm.behaviour_mut().work.send_request(&p, work.clone());
                    let (tx, rx) = oneshot::channel();
                    self.pending_out.insert(id, tx);
                    pending.push((p, rx));
                }
                let _ = reply.send((pending, not_connected));
            }
            Command::SendVerify { peer, request, reply } => {
                if self.pending_out.len() >= MAX_PENDING_OUTBOUND {
                    let _ = reply.send(Err("too many requests in flight".into()));
                    return;
                }
                if peer == self.peer_id() {
                    let _ = reply.send(Err("cannot send a verify request to this node itself".into()));
                    return;
                }
                self.mark_used(&peer);
                let id = self.swarm.behaviour_mut().verify.send_request(&peer, request);
                let (tx, rx) = oneshot::channel();
                self.pending_out.insert(id, tx);
                let _ = reply.send(Ok(rx));
            }
            Command::VerifyResponse { request_id, response, reply } => {
                let out = match self.pending_verify.remove(&request_id) {
                    None => Err("unknown or expired request_id".to_string()),
                    Some((ch, _)) => self
                        .swarm
                        .behaviour_mut()
                        .verify
                        .send_response(ch, response)
                        .map_err(|_| "the requesting peer is gone".to_string()),
                };
                let _ = reply.send(out);
            }
            Command::IsConnected(p, r) => {
                let _ = r.send(self.swarm.is_connected(&p));
            }
            Command::FindProviders(model, reply) => {
                self.providers.find(&mut self.swarm.behaviour_mut().kad, &model, reply);
            }
            Command::PopResults(w, r) => {
                let _ = r.send(self.results.pop(&w));
            }
            Command::Shutdown => {}
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!("listening on {}", self.with_p2p(&address));
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ListenerClosed { listener_id, addresses, reason } => {
                if let Err(e) = &reason {
                    tracing::info!("listener closed: {e}");
                }
                self.reach.on_listener_closed(listener_id);
                self.listen_addrs.retain(|a| !addresses.contains(a));
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, num_established, .. } => {
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                if !self.peers.contains_key(&peer_id) && self.peers.len() >= MAX_PEERS {
                    tracing::warn!("peer limit {MAX_PEERS} reached, closing connection to {peer_id}");
                    let _ = self.swarm.close_connection(connection_id);
                    return;
                }
                let new_peer = !self.peers.contains_key(&peer_id);
                let counter = if endpoint.is_dialer() { &self.stats.conns_out } else { &self.stats.conns_in };
                counter.fetch_add(1, Ordering::Relaxed);
                self.limits.dial_done(&peer_id);
                let st = self.peers.entry(peer_id).or_insert_with(|| PeerState {
                    conns: HashMap::new(),
                    connected_since: util::now_s(),
                    latency_ms: None,
                    info: None,
                    last_used: 0,
                    dialed: endpoint.is_dialer(),
                });
                st.conns.insert(connection_id, addr.clone());
                if endpoint.is_dialer() && !reach::is_relayed(&addr) {
                    self.peerstore.record(peer_id, &addr, util::now_s());
                }
                if new_peer || num_established.get() == 1 {
                    tracing::info!("peer connected: {peer_id} via {addr}");
                    self.emit(json!({
                        "type": "peer_connected",
                        "peer_id": peer_id.to_string(),
                        "addr": strip_p2p(&addr).0.with(Protocol::P2p(peer_id)).to_string(),
                        "local": is_loopback(&addr),
                    }));
                    let body = self.local_info_value(&peer_id);
                    self.swarm.behaviour_mut().handshake.send_request(&peer_id, body);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, cause, .. } => {
                let counter = match &cause {
                    _ if self.pruning.remove(&peer_id) => &self.stats.closed_pruned,
                    Some(libp2p::swarm::ConnectionError::KeepAliveTimeout) => &self.stats.closed_idle,
                    Some(_) => &self.stats.closed_remote,
                    None => &self.stats.closed_local,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(st) = self.peers.get_mut(&peer_id) {
                    st.conns.remove(&connection_id);
                }
                if num_established == 0 {
                    self.reach.on_disconnected(&peer_id);
                    self.limits.on_closed(peer_id, util::now_s());
                }
                if num_established == 0 && self.peers.remove(&peer_id).is_some() {
                    tracing::info!("peer disconnected: {peer_id}");
                    self.emit(json!({"type": "peer_disconnected", "peer_id": peer_id.to_string()}));
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if let Some(p) = peer_id {
                    self.limits.dial_done(&p);
                    // every address it was tried on failed: make room in its bucket (routing.rs)
                    if matches!(error, libp2p::swarm::DialError::Transport(_)) && !self.swarm.is_connected(&p) {
                        routing::forget_unreachable(&mut self.swarm.behaviour_mut().kad, &p);
                    }
                }
                tracing::debug!("dial {peer_id:?} failed: {error}");
            }
            SwarmEvent::Behaviour(b) => self.on_behaviour_event(b),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message { propagation_source, message_id, message }) => {
                let acceptance = self.on_gossip(message);
                let _ = self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    acceptance,
                );
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let conn_addr = self.peers.get(&peer_id).and_then(|s| s.conns.values().next().cloned());
                self.reach.on_identify(peer_id, &info, conn_addr.as_ref());
                let kad_proto = StreamProtocol::new(PROTO_KAD);
                if info.protocols.contains(&kad_proto) {
                    // a remote peer's loopback addresses would reach this machine, not it
                    let remote = conn_addr.as_ref().is_some_and(|c| !is_loopback(c));
                    for a in info.listen_addrs.into_iter().filter(|a| !(remote && is_loopback(a))).take(16) {
                        routing::add(&mut self.swarm.behaviour_mut().kad, &peer_id, a);
                    }
                }
            }
            // a peer we dialed that speaks Kademlia (manual inserts: routing.rs)
            BehaviourEvent::Kad(kad::Event::RoutablePeer { peer, address }) => {
                routing::add(&mut self.swarm.behaviour_mut().kad, &peer, address);
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. })
                if peer != self.peer_id()
                    && !self.swarm.is_connected(&peer)
                    && self.limits.dial_discovered(peer, self.peers.len(), util::now_s()) =>
            {
                self.stats.dials_discovery.fetch_add(1, Ordering::Relaxed);
                let _ = self.swarm.dial(peer);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list {
                    routing::add(&mut self.swarm.behaviour_mut().kad, &peer, addr.clone());
                    if !self.swarm.is_connected(&peer)
                        && self.limits.dial_discovered(peer, self.peers.len(), util::now_s())
                    {
                        self.stats.dials_discovery.fetch_add(1, Ordering::Relaxed);
                        let _ = self.swarm.dial(strip_p2p(&addr).0.with(Protocol::P2p(peer)));
                    }
                }
            }
            BehaviourEvent::Ping(ping::Event { peer, result: Ok(rtt), .. }) => {
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.latency_ms = Some((rtt.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0);
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::Bootstrap(_),
                step,
                ..
            }) if !step.last && self.kad_refresh != Some(id) => {
                // the lookup of our own id is done; the bucket refreshes that follow would dial
                // most of a small network (routing.rs): end each one before it sends a request
                self.stats.kad_steps_cut.fetch_add(1, Ordering::Relaxed);
                if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    q.finish();
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::Bootstrap(_) | kad::QueryResult::GetClosestPeers(_),
                step,
                ..
            }) if step.last => {
                // the walk connected to every peer it asked: trim those beyond the target
                // ourselves, before they all pass their own high watermarks and prune
                self.stats.kad_walks.fetch_add(1, Ordering::Relaxed);
                self.limits.walk_done();
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(r),
                step,
                ..
            }) => {
                let (fresh, done) = self.providers.on_progress(self.peer_id(), id, r, step.last);
                for p in fresh {
                    if !self.swarm.is_connected(&p) {
                        let _ = self.swarm.dial(p);
                    }
                }
                if done {
                    if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        q.finish();
                    }
                }
            }
            BehaviourEvent::Autonat(ev) => self.reach.on_autonat(&ev),
            BehaviourEvent::RelayClient(ev) => self.reach.on_relay_client(&ev),
            BehaviourEvent::Dcutr(ev) => self.reach.on_dcutr(&ev),
            BehaviourEvent::Handshake(ev) => self.on_handshake(ev),
            BehaviourEvent::Verify(ev) => self.on_verify(ev),
            BehaviourEvent::Work(ev) => self.on_work(ev),
            _ => {}
        }
    }

    fn store_handshake(&mut self, peer: PeerId, v: &Value) {
        match LocalInfo::parse(v, false) {
            Ok(info) => {
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.info = Some(info.clone());
                }
                self.emit(json!({
                    "type": "handshake",
                    "peer_id": peer.to_string(),
                    "info": info.to_value(),
                }));
            }
            Err(e) => {
                self.stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("invalid handshake from {peer}: {e}");
            }
        }
    }

    fn on_handshake(&mut self, ev: request_response::Event<Value, Value>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                self.store_handshake(peer, &request);
                let body = self.local_info_value(&peer);
                let _ = self.swarm.behaviour_mut().handshake.send_response(channel, body);
            }
            Event::Message { peer, message: Message::Response { response, .. }, .. } => {
                self.store_handshake(peer, &response);
            }
            Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!("handshake with {peer} failed: {error}");
            }
            _ => {}
        }
    }

    fn on_verify(&mut self, ev: request_response::Event<Value, Value>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                if let Err(e) = util::validate_object(&request, "request") {
                    self.count_invalid(&e);
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .verify
                        .send_response(channel, json!({"error": format!("invalid request: {e}")}));
                    return;
                }
                if !self.limiter.lock().unwrap().allow(&peer, Instant::now()) {
                    self.stats.dropped_rate.fetch_add(1, Ordering::Relaxed);
                    let _ = self.swarm.behaviour_mut().verify.send_response(channel, json!({"error": "rate limited"}));
                    return;
                }
                if self.pending_verify.len() >= MAX_PENDING_VERIFY {
                    let _ = self.swarm.behaviour_mut().verify.send_response(channel, json!({"error": "busy"}));
                    return;
                }
                self.mark_used(&peer);
                let id = format!("v{}", self.next_verify_id);
                self.next_verify_id += 1;
                self.pending_verify.insert(id.clone(), (channel, Instant::now()));
                self.stats.verify_requests.fetch_add(1, Ordering::Relaxed);
                self.emit(json!({
                    "type": "verify_request",
                    "request_id": id,
                    "from": peer.to_string(),
                    "received_at_ms": util::now_ms(),
                    "request": request,
                }));
            }
            Event::Message { message: Message::Response { request_id, response }, .. } => {
                if let Some(tx) = self.pending_out.remove(&request_id) {
                    let _ = tx.send(match util::validate_object(&response, "response") {
                        Ok(()) => Ok(response),
                        Err(e) => Err(format!("invalid response from peer: {e}")),
                    });
                }
            }
            Event::OutboundFailure { request_id, error, .. } => {
                if let Some(tx) = self.pending_out.remove(&request_id) {
                    let _ = tx.send(Err(error.to_string()));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!("inbound verify from {peer} failed: {error}");
            }
            _ => {}
        }
    }

    fn on_work(&mut self, ev: request_response::Event<Value, Value>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                let answer = match util::validate_work_object(&request, "work") {
                    Err(e) => {
                        self.count_invalid(&e);
                        json!({"ok": false, "error": e})
                    }
                    Ok(_)
                        if !self.limiter.lock().unwrap().allow(&peer, Instant::now())
                            || !crate::work_budget::allow(&mut self.work_bytes, &peer, request.to_string().len()) =>
                    {
                        self.stats.dropped_rate.fetch_add(1, Ordering::Relaxed);
                        json!({"ok": false, "error": "rate limited"})
                    }
                    Ok(_) => {
                        self.mark_used(&peer);
                        self.stats.work_received.fetch_add(1, Ordering::Relaxed);
                        self.emit(json!({
                            "type": "work",
                            "via": "direct",
                            "from": peer.to_string(),
                            "received_at_ms": util::now_ms(),
                            "work": request,
                        }));
                        json!({"ok": true})
                    }
                };
                let _ = self.swarm.behaviour_mut().work.send_response(channel, answer);
            }
            Event::Message { message: Message::Response { request_id, response }, .. } => {
                if let Some(tx) = self.pending_out.remove(&request_id) {
                    let ok = response.get("ok").and_then(Value::as_bool) == Some(true);
                    let _ = tx.send(if ok {
                        Ok(response)
                    } else {
                        Err(response
                            .get("error")
                            .and_then(Value::as_str)
                            .unwrap_or("peer refused the work")
                            .to_string())
                    });
                }
            }
            Event::OutboundFailure { request_id, error, .. } => {
                if let Some(tx) = self.pending_out.remove(&request_id) {
                    let _ = tx.send(Err(error.to_string()));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                if matches!(error, request_response::InboundFailure::Io(_)) {
                    self.stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!("inbound work from {peer} failed: {error}");
            }
            _ => {}
        }
    }

    fn mark_used(&mut self, peer: &PeerId) {
        if let Some(st) = self.peers.get_mut(peer) {
            st.last_used = util::now_s();
        }
    }

    /// How a peer is reached: through a relay, directly after hole punching, or directly.
    fn path_of(&self, id: &PeerId, s: &PeerState) -> &'static str {
        if !s.conns.is_empty() && s.conns.values().all(reach::is_relayed) {
            "relayed"
        } else if self.reach.is_punched(id) {
            "hole-punched"
        } else {
            "direct"
        }
    }

    /// Below the low watermark: dials peers the routing table knows and we are not connected to
    /// (as many as connmgr allows), so no walk is needed while the table has some. Returns how
    /// many it dialed.
    fn dial_from_table(&mut self) -> usize {
        let now = util::now_s();
        let mut dialed = 0;
        for peer in routing::disconnected(&mut self.swarm.behaviour_mut().kad) {
            if self.swarm.is_connected(&peer) || !self.limits.dial_discovered(peer, self.peers.len(), now) {
                continue;
            }
            self.stats.dials_table.fetch_add(1, Ordering::Relaxed);
            dialed += 1;
            let _ = self.swarm.dial(peer);
        }
        dialed
    }

    /// Dials the peers remembered from earlier runs (a rejoin with no bootstrap address).
    fn dial_remembered(&mut self) {
        let me = self.peer_id();
        for (peer, addrs) in self.peerstore.dial_addrs().into_iter().take(self.limits.target) {
            if peer == me || self.swarm.is_connected(&peer) {
                continue;
            }
            for a in &addrs {
                routing::add(&mut self.swarm.behaviour_mut().kad, &peer, a.clone());
            }
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer).addresses(addrs).build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!("dial remembered peer {peer}: {e}");
            }
        }
    }

    /// Every few seconds: prune to the target peer count, reserve relay slots when behind a
    /// NAT, republish provider records after the first connections, save the peer store.
    fn maintain(&mut self) {
        let now = util::now_s();
        let bootstrap: HashSet<PeerId> = self.bootstrap.iter().filter_map(|a| strip_p2p(a).1).collect();
        let mesh: HashSet<PeerId> = self.swarm.behaviour().gossipsub.all_mesh_peers().copied().collect();
        let i_serve = self.local_info.roles.iter().any(|r| r == "oracle");
        let cands: Vec<connmgr::Candidate> = self
            .peers
            .iter()
            .map(|(p, s)| {
                let oracle = s.info.as_ref().is_some_and(|i| i.roles.iter().any(|r| r == "oracle"));
                connmgr::Candidate {
                    peer: *p,
                    protected: bootstrap.contains(p) || self.reach.is_relay_of_ours(p) || (oracle && !i_serve),
                    in_mesh: mesh.contains(p),
                    last_used: s.last_used,
                    connected_since: s.connected_since,
                    dialed: s.dialed,
                }
            })
            .collect();
        for p in self.limits.select_prune(cands, now) {
            tracing::debug!("pruning {p}: above the target of {} peers", self.limits.target);
            if self.swarm.disconnect_peer_id(p).is_ok() {
                self.pruning.insert(p);
            }
        }
        let peers = &self.peers;
        for (relay, a) in self.reach.reservations_to_make(|p| peers.contains_key(p)) {
            tracing::info!("behind a NAT: reserving a relay slot at {a}");
            let id = self.swarm.listen_on(a.clone()).map_err(|e| tracing::warn!("cannot listen on {a}: {e}")).ok();
            self.reach.listening(relay, id);
        }
        let has_peers = !self.peers.is_empty();
        self.providers.republish_on_join(&mut self.swarm.behaviour_mut().kad, has_peers);
        self.providers.prune();
        let connected: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in connected {
            self.peerstore.touch(&p, now);
        }
        self.peerstore.save(false);
    }

    fn count_invalid(&self, e: &str) {
        if e.contains("limit of") {
            self.stats.dropped_oversize.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_gossip(&mut self, message: gossipsub::Message) -> gossipsub::MessageAcceptance {
        use gossipsub::MessageAcceptance::*;
        let Some(source) = message.source else {
            self.stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
            return Reject;
        };
        if message.data.len() > util::MAX_MESSAGE_BYTES {
            self.stats.dropped_oversize.fetch_add(1, Ordering::Relaxed);
            return Reject;
        }
        let value: Value = match serde_json::from_slice(&message.data) {
            Ok(v) => v,
            Err(_) => {
                self.stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
                return Reject;
            }
        };
        let is_work = self.work_topics.takes(&message.topic);
        let is_result = message.topic == gossipsub::IdentTopic::new(TOPIC_RESULT).hash();
        if !is_work && !is_result {
            return Ignore;
        }
        if is_result && message.data.len() > util::MAX_RESULT_MESSAGE_BYTES {
            // A draft is a few hundred bytes; anything near the 256 KiB message limit is only
            // ballast, and every accepted result is forwarded and buffered by each subscriber.
            self.stats.dropped_oversize.fetch_add(1, Ordering::Relaxed);
            return Reject;
        }
        let work_id = match util::validate_work_object(&value, if is_work { "work" } else { "result" }) {
            Ok(w) => w,
            Err(e) => {
                self.count_invalid(&e);
                return Reject;
            }
        };
        if let Some(m) = crate::topics::model_of(&message.topic) {
            if value.get("model").and_then(Value::as_str) != Some(m) {
                self.count_invalid("work for another model on a model's topic");
                return Reject;
            }
        }
        if !self.limiter.lock().unwrap().allow(&source, Instant::now())
            || (is_work && !crate::work_budget::allow(&mut self.work_bytes, &source, message.data.len()))
        {
            self.stats.dropped_rate.fetch_add(1, Ordering::Relaxed);
            return Ignore;
        }
        let now = util::now_ms();
        if is_work {
            self.stats.work_received.fetch_add(1, Ordering::Relaxed);
            self.emit(json!({
                "type": "work",
                "via": "gossip",
                "from": source.to_string(),
                "received_at_ms": now,
                "work": value,
            }));
        } else {
            self.stats.results_received.fetch_add(1, Ordering::Relaxed);
            self.emit(json!({
                "type": "result",
                "work_id": work_id,
                "from": source.to_string(),
                "received_at_ms": now,
                "result": value,
            }));
            self.results.push(StoredResult {
                work_id,
                from: source.to_string(),
                received_at_ms: now,
                result: value,
                at: Some(Instant::now()),
                bytes: 0,
            });
        }
        Accept
    }
}
