//! shard-daemon: the Shard node's libp2p sidecar.

mod api;
mod connmgr;
#[cfg(test)]
mod fixture_tests;
mod infer;
mod ip_limits;
mod net;
mod origin;
mod peerstore;
mod providers;
mod reach;
mod routing;
mod topics;
mod util;
mod webrtc_direct;
mod work_budget;

use clap::Parser;
use libp2p::{identity, Multiaddr};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const KEY_FILE: &str = "identity.key";
/// Capacity of the command channel from the control API to the event loop.
const COMMAND_CAPACITY: usize = 256;
/// Capacity of the event broadcast (slower SSE readers are lagged).
const EVENT_CAPACITY: usize = 1024;

#[derive(Parser, Debug)]
#[command(name = "shard-daemon", version, about = "Shard libp2p sidecar", args_override_self = true)]
struct Cli {
    /// Control API port on 127.0.0.1 (0: OS-chosen)
    #[arg(long, default_value_t = 9091)]
    control_port: u16,
    /// libp2p TCP port; QUIC uses the same number on UDP (0: OS-chosen)
    #[arg(long, default_value_t = 4001)]
    tcp_port: u16,
    /// libp2p WebSocket port (default: tcp port + 100; 0: OS-chosen)
    #[arg(long)]
    ws_port: Option<u16>,
    /// WebRTC-direct UDP port, for browsers on other machines (default: the WebSocket port
    /// number, on UDP; 0: OS-chosen)
    #[arg(long)]
    webrtc_port: Option<u16>,
    /// Do not listen on WebRTC-direct
    #[arg(long)]
    no_webrtc: bool,
    /// Address the libp2p listeners bind (the control API is always on 127.0.0.1)
    #[arg(long, alias = "p2p-host", default_value = "0.0.0.0")]
    listen_host: IpAddr,
    /// Bootstrap peer multiaddr (repeatable)
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// File with one bootstrap multiaddr per line (# comments)
    #[arg(long, value_name = "FILE")]
    bootstrap_file: Option<PathBuf>,
    /// Seconds between redials of bootstrap peers that are not connected
    #[arg(long, default_value_t = 30)]
    reconnect_seconds: u64,
    /// Log filter: error, warn, info, debug, trace, or tracing directives
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Directory for the persistent identity (identity.key, mode 0600)
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Disable mDNS discovery
    #[arg(long)]
    no_mdns: bool,
    /// Exit cleanly when stdin reaches end of file
    #[arg(long)]
    exit_with_stdin: bool,
    /// File holding the control token (SHARD_CONTROL_TOKEN takes precedence)
    #[arg(long, value_name = "FILE")]
    control_token_file: Option<PathBuf>,
    /// Exit with code 2 when a requested port is busy instead of using an OS-chosen one
    #[arg(long)]
    strict_ports: bool,
    /// Incoming work/results/verify requests accepted per second from one peer
    #[arg(long, default_value_t = 200.0)]
    peer_rate: f64,
    /// Burst size of the per-peer rate limit
    #[arg(long, default_value_t = 400.0)]
    peer_burst: f64,
    /// Peers to keep connected (discovery dials below half of it; above 1.5x the least useful
    /// are closed down to it)
    #[arg(long, default_value_t = connmgr::DEFAULT_TARGET)]
    target_peers: usize,
    /// Inbound connections accepted from one IP address (loopback is one address: N daemons on
    /// one machine, as in bench/mesh_scale.py, need more than the default)
    #[arg(long, default_value_t = ip_limits::MAX_PER_IP)]
    max_conns_per_ip: usize,
    /// Do not serve as a relay (v2) even when AutoNAT finds this node publicly reachable
    #[arg(long)]
    no_relay_server: bool,
    /// AutoNAT treats private IP addresses (10/8, 192.168/16, ...) as reachable: for LANs and
    /// tests in network namespaces
    #[arg(long)]
    reach_private_addrs: bool,
    /// Runtime worker threads (the daemon is I/O bound; 1, the default, runs everything on one
    /// thread, which keeps memory and idle CPU low)
    #[arg(long, default_value_t = 1)]
    worker_threads: usize,
    /// Origin a browser's WebSocket upgrade may come from (repeatable; "null" allows opaque
    /// origins). An upgrade with any other Origin is refused; one with none is not a browser's.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
}

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("shard-daemon: error: {msg}");
    std::process::exit(code);
}

fn read_token(cli: &Cli) -> Result<String, String> {
    if let Ok(t) = std::env::var("SHARD_CONTROL_TOKEN") {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    if let Some(f) = &cli.control_token_file {
        let t =
            std::fs::read_to_string(f).map_err(|e| format!("cannot read --control-token-file {}: {e}", f.display()))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            return Err(format!("control token file {} is empty", f.display()));
        }
        return Ok(t);
    }
    Err("no control token: set SHARD_CONTROL_TOKEN or pass --control-token-file FILE".into())
}

fn parse_bootstrap(cli: &Cli) -> Result<Vec<Multiaddr>, String> {
    let mut lines: Vec<(String, String)> =
        cli.bootstrap.iter().map(|s| (s.clone(), "--bootstrap".to_string())).collect();
    if let Some(f) = &cli.bootstrap_file {
        let text =
            std::fs::read_to_string(f).map_err(|e| format!("cannot read --bootstrap-file {}: {e}", f.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() {
                lines.push((line.to_string(), format!("{} line {}", f.display(), i + 1)));
            }
        }
    }
    let mut out = vec![];
    for (s, origin) in lines {
        let a: Multiaddr = s.trim().parse().map_err(|e| format!("bad bootstrap multiaddr {s:?} ({origin}): {e}"))?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

fn load_or_create_key(dir: &Path) -> Result<identity::Keypair, String> {
    let path = dir.join(KEY_FILE);
    if path.exists() {
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        return identity::Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| format!("{} is not a valid keypair: {e}", path.display()));
    }
    create_dir_private(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let kp = identity::Keypair::generate_ed25519();
    let bytes = kp.to_protobuf_encoding().map_err(|e| format!("cannot encode keypair: {e}"))?;
    let tmp = dir.join(format!("{KEY_FILE}.tmp"));
    write_private(&tmp, &bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tracing::info!("created a new identity in {}", path.display());
    Ok(kp)
}

fn create_dir_private(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

async fn bind_control(port: u16, strict: bool) -> Result<tokio::net::TcpListener, (i32, String)> {
    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => Ok(l),
        Err(e) if port != 0 && !strict => {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(|e| (1, format!("cannot bind the control API: {e}")))?;
            let got = l.local_addr().map(|a| a.port()).unwrap_or(0);
            tracing::warn!("control port {port} is not available ({e}); using port {got} instead");
            Ok(l)
        }
        Err(e) if port != 0 => {
            Err((2, format!("control port {port} is not available ({e}); --strict-ports is set, so not falling back")))
        }
        Err(e) => Err((1, format!("cannot bind the control API: {e}"))),
    }
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|e| fail(2, &format!("bad --log-level {:?}: {e}", cli.log_level)));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_target(false)
        .init();
    let token = read_token(&cli).unwrap_or_else(|e| fail(2, &e));
    let bootstrap = parse_bootstrap(&cli).unwrap_or_else(|e| fail(2, &e));
    if !(cli.peer_rate > 0.0 && cli.peer_burst >= 1.0) {
        fail(2, "--peer-rate must be > 0 and --peer-burst at least 1");
    }
    if cli.reconnect_seconds == 0 {
        fail(2, "--reconnect-seconds must be at least 1");
    }
    let keypair = match &cli.data_dir {
        Some(d) => load_or_create_key(d).unwrap_or_else(|e| fail(1, &e)),
        None => identity::Keypair::generate_ed25519(),
    };
    // One thread by default: the daemon is I/O bound, and each worker costs a stack, an
    // allocator arena and cross-thread wake-ups (docs/scale.md).
    let rt = if cli.worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(cli.worker_threads).enable_all().build()
    };
    let rt = rt.unwrap_or_else(|e| fail(1, &format!("cannot start the runtime: {e}")));
    let code = rt.block_on(run(cli, token, bootstrap, keypair));
    std::process::exit(code);
}

async fn run(cli: Cli, token: String, bootstrap: Vec<Multiaddr>, keypair: identity::Keypair) -> i32 {
    let control = match bind_control(cli.control_port, cli.strict_ports).await {
        Ok(l) => l,
        Err((code, msg)) => fail(code, &msg),
    };
    let control_port = control.local_addr().map(|a| a.port()).unwrap_or(0);
    let ws_port = cli.ws_port.unwrap_or(if cli.tcp_port == 0 { 0 } else { cli.tcp_port.saturating_add(100) });
    let webrtc = if cli.no_webrtc {
        None
    } else {
        let cert = webrtc_direct::load_or_create_cert(cli.data_dir.as_deref()).unwrap_or_else(|e| fail(1, &e));
        Some(webrtc_direct::Listen {
            port: cli.webrtc_port.unwrap_or(ws_port),
            explicit: cli.webrtc_port.is_some(),
            cert,
        })
    };
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (ev_tx, _) = broadcast::channel(EVENT_CAPACITY);
    let stats = Arc::new(net::Stats::default());
    let limiter = Arc::new(std::sync::Mutex::new(util::RateLimiter::new(cli.peer_rate, cli.peer_burst, 4096)));
    let cfg = net::NetConfig {
        keypair: keypair.clone(),
        listen_host: cli.listen_host,
        tcp_port: cli.tcp_port,
        ws_port,
        strict_ports: cli.strict_ports,
        mdns: !cli.no_mdns,
        bootstrap,
        reconnect: Duration::from_secs(cli.reconnect_seconds),
        version: VERSION,
        limiter: limiter.clone(),
        data_dir: cli.data_dir.clone(),
        target_peers: cli.target_peers,
        max_conns_per_ip: cli.max_conns_per_ip,
        relay_server: !cli.no_relay_server,
        reach_private: cli.reach_private_addrs,
        allowed_origins: cli.allowed_origins.clone(),
        webrtc,
    };
    let el = match net::EventLoop::new(cfg, cmd_rx, ev_tx.clone(), stats.clone()).await {
        Ok(el) => el,
        Err((code, msg)) => fail(code, &msg),
    };
    let peer_id = el.peer_id();
    let ready = serde_json::json!({
        "peer_id": peer_id.to_string(),
        "control_port": control_port,
        "tcp_port": el.ports.tcp,
        "ws_port": el.ports.ws,
        "quic_port": el.ports.quic,
        "webrtc_port": el.ports.webrtc,
        "listen_addrs": el.listen_addrs_p2p(),
        "version": VERSION,
    });
    let (shutdown_tx, mut shutdown_rx) = mpsc::channel::<()>(4);
    let infer = infer::Infer::new(el.stream_control(), limiter, stats.clone(), ev_tx.clone());
    tokio::spawn(infer.clone().serve());
    let state = Arc::new(api::AppState {
        commands: cmd_tx.clone(),
        events: ev_tx,
        stats,
        token: token.into_bytes(),
        keypair,
        shutdown: shutdown_tx.clone(),
        infer,
    });
    let app = api::router(state);
    let loop_task = tokio::spawn(el.run());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(control, app).await {
            tracing::error!("control API stopped: {e}");
        }
    });
    if cli.exit_with_stdin {
        let tx = shutdown_tx.clone();
        // A plain thread: a blocking stdin read must not hold up the runtime's shutdown.
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut stdin = std::io::stdin();
            loop {
                match std::io::Read::read(&mut stdin, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            // Shut down first: with the parent gone, stderr may be a broken pipe too.
            let _ = tx.blocking_send(());
            tracing::info!("stdin closed, shutting down");
        });
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "SHARD_SIDECAR_READY {ready}");
        let _ = out.flush();
    }
    tracing::info!("shard-daemon {VERSION} ready: peer {peer_id}, control http://127.0.0.1:{control_port}");
    let signal = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {},
                        _ = term.recv() => {},
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    };
    tokio::select! {
        _ = shutdown_rx.recv() => tracing::info!("shutdown requested"),
        _ = signal => tracing::info!("signal received, shutting down"),
    }
    let _ = cmd_tx.send(net::Command::Shutdown).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), loop_task).await;
    // give the /shutdown answer a moment to leave
    tokio::time::sleep(Duration::from_millis(50)).await;
    0
}
