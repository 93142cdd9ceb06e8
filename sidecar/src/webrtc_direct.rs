//! WebRTC-direct (issue 15): a browser on another machine dials the node over UDP with no TLS
//! certificate of a CA. The node's address carries the SHA-256 hash of a self-signed DTLS
//! certificate (`/udp/P/webrtc-direct/certhash/<hash>`); the browser checks the certificate
//! against it, then noise over a data channel proves the peer id, as on every other transport.
//!
//! The certificate is made once and kept in the data dir, so the certhash, and so the address a
//! page or a peer saved, stays the same across restarts.

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{
    Boxed, DialOpts, ListenerId, OptionalTransport, Transport, TransportError, TransportEvent,
};
use libp2p::{identity, Multiaddr, PeerId};
use libp2p_webrtc::tokio::Certificate;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

pub const CERT_FILE: &str = "webrtc-cert.pem";

/// The certificate in `dir/webrtc-cert.pem`, or a new one written there (mode 0600). A file
/// that does not parse is replaced (the certhash changes, nothing else depends on it). Without
/// a data dir, a new certificate for this run.
pub fn load_or_create_cert(dir: Option<&Path>) -> Result<Certificate, String> {
    let Some(dir) = dir else {
        return generate();
    };
    let path = dir.join(CERT_FILE);
    if path.exists() {
        let pem = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // webrtc-rs slices the file's first block without checking its length: a damaged file
        // must not take the daemon down
        match std::panic::catch_unwind(|| Certificate::from_pem(&pem)) {
            Ok(Ok(cert)) => return Ok(cert),
            _ => tracing::warn!("{} is not a valid certificate: making a new one", path.display()),
        }
    }
    crate::create_dir_private(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cert = generate()?;
    let tmp = dir.join(format!("{CERT_FILE}.tmp"));
    crate::write_private(&tmp, cert.serialize_pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tracing::info!("created a WebRTC-direct certificate in {}", path.display());
    Ok(cert)
}

fn generate() -> Result<Certificate, String> {
    // libp2p-webrtc 0.9 ignores the rng (rcgen draws the key from the OS)
    Certificate::generate(&mut rand::thread_rng()).map_err(|e| format!("cannot make a WebRTC certificate: {e}"))
}

/// The swarm's WebRTC-direct transport, or one that accepts no address when `cert` is None
/// (the listener is off). It only listens: browsers dial it, a daemon reaches another daemon
/// over TCP or QUIC.
pub fn transport(key: &identity::Keypair, cert: Option<Certificate>) -> Boxed<(PeerId, StreamMuxerBox)> {
    let inner = cert.map(|c| {
        ListenOnly(
            libp2p_webrtc::tokio::Transport::new(key.clone(), c)
                .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn))),
        )
    });
    let optional = match inner {
        Some(t) => OptionalTransport::some(t),
        None => OptionalTransport::none(),
    };
    optional.boxed()
}

/// A transport that accepts connections but dials none. The swarm dials every address it knows
/// of a peer at once and keeps the first connection: each daemon-to-daemon dial also started a
/// webrtc-rs peer connection whose ICE agent and tasks outlived the dial (docs/scale.md: at N=30
/// ~5.5 MB of each daemon's own memory and half its idle CPU).
struct ListenOnly<T>(T);

impl<T: Transport + Unpin> Transport for ListenOnly<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Self::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(&mut self, addr: Multiaddr, _opts: DialOpts) -> Result<Self::Dial, TransportError<Self::Error>> {
        Err(TransportError::MultiaddrNotSupported(addr))
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

/// The listener's setting: its UDP port (0: any) and certificate.
pub struct Listen {
    pub port: u16,
    /// the port was asked for explicitly (with --strict-ports a busy one is then an error;
    /// the default, the WebSocket port number, falls back to any)
    pub explicit: bool,
    pub cert: Certificate,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("shard-webrtc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_certificate_is_made_once_and_kept() {
        let dir = scratch("kept");
        let first = load_or_create_cert(Some(&dir)).unwrap();
        let path = dir.join(CERT_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let again = load_or_create_cert(Some(&dir)).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        let elsewhere = load_or_create_cert(Some(&scratch("elsewhere"))).unwrap();
        assert_ne!(first.fingerprint(), elsewhere.fingerprint());
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(scratch("elsewhere")).ok();
    }

    #[tokio::test]
    async fn the_transport_listens_but_never_dials() {
        use libp2p::core::transport::PortUse;
        use libp2p::core::Endpoint;
        use libp2p::multiaddr::Protocol;
        let key = identity::Keypair::generate_ed25519();
        let mut t = transport(&key, Some(generate().unwrap()));
        let listen: Multiaddr = "/ip4/127.0.0.1/udp/0/webrtc-direct".parse().unwrap();
        assert!(t.listen_on(ListenerId::next(), listen).is_ok());
        // a well-formed address of another node: the WebRTC transport itself would dial it
        let other = generate().unwrap().fingerprint().to_multihash();
        let addr = "/ip4/127.0.0.1/udp/9/webrtc-direct".parse::<Multiaddr>().unwrap().with(Protocol::Certhash(other));
        let opts = DialOpts { role: Endpoint::Dialer, port_use: PortUse::Reuse };
        assert!(matches!(t.dial(addr, opts), Err(TransportError::MultiaddrNotSupported(_))));
    }

    #[test]
    fn a_damaged_file_is_replaced_not_fatal() {
        let dir = scratch("damaged");
        std::fs::create_dir_all(&dir).unwrap();
        for junk in ["", "-----BEGIN EXPIRES-----\nAA==\n-----END EXPIRES-----\n", "not a pem"] {
            std::fs::write(dir.join(CERT_FILE), junk).unwrap();
            let cert = load_or_create_cert(Some(&dir)).unwrap();
            assert_eq!(load_or_create_cert(Some(&dir)).unwrap().fingerprint(), cert.fingerprint());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
