//! The WebSocket listener admits browsers only from the node's own pages (issue 19, item 5).
//!
//! WebSockets are outside CORS: any web page the user opens may dial `ws://127.0.0.1:N` and, on
//! a bare listener, join the network as a peer (a "local" scout, say). A browser always sends
//! the page's `Origin` with a WebSocket upgrade and a page cannot change it, so the check is
//! made on that header. libp2p-websocket has no hook for it: this transport sits under the
//! WebSocket layer (in place of its plain TCP transport), peeks at the upgrade request's head
//! on each accepted socket (without consuming it) and, when its `Origin` is not allowed,
//! answers `403` and closes the socket before the WebSocket handshake. An upgrade with no
//! `Origin` is not from a browser (native peers, Node.js) and goes on; `null` (sandboxed
//! frames, `file://` pages) is refused unless allowed by name. Dialing is untouched.

use futures::{future::BoxFuture, FutureExt};
use libp2p::{
    core::transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent},
    tcp, Multiaddr,
};
use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::AsyncWriteExt;

/// The most of a request head read before giving up on it (browsers send well under 2 KiB).
pub const MAX_HEAD: usize = 8192;
/// A socket that has not sent its request head by then is closed.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The origins allowed, normalized (lowercase, no trailing slash).
pub fn normalize(origins: &[String]) -> Vec<String> {
    origins.iter().map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase()).filter(|o| !o.is_empty()).collect()
}

/// Whether an upgrade request with this head may go on: every `Origin` header it carries must
/// be allowed (none: not a browser). Err holds the refused origin.
pub fn check_head(head: &[u8], allowed: &[String]) -> Result<(), String> {
    let text = String::from_utf8_lossy(head);
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.trim().eq_ignore_ascii_case("origin") {
            let origin = value.trim().trim_end_matches('/').to_ascii_lowercase();
            if !allowed.contains(&origin) {
                return Err(origin);
            }
        }
    }
    Ok(())
}

/// The request head (up to the blank line), peeked: the bytes stay for the WebSocket layer.
async fn peek_head(stream: &tcp::tokio::TcpStream) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; MAX_HEAD];
    loop {
        let n = stream.0.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before its request"));
        }
        if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(buf);
        }
        if n == MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too long"));
        }
        // Part of the head is there: peek returns at once, so wait for the rest.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn admit(mut stream: tcp::tokio::TcpStream, allowed: Arc<Vec<String>>) -> io::Result<tcp::tokio::TcpStream> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, peek_head(&stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request head"))??;
    if let Err(origin) = check_head(&head, &allowed) {
        tracing::info!("websocket upgrade from origin {origin:?} refused (not an allowed origin)");
        let body = "this origin may not connect\n";
        let answer =
            format!("HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        let _ = stream.0.write_all(answer.as_bytes()).await;
        let _ = stream.0.shutdown().await;
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("origin {origin:?} not allowed")));
    }
    Ok(stream)
}

/// A TCP transport whose inbound sockets must pass the Origin check (to go under
/// `websocket::Config`).
pub struct OriginCheck {
    inner: tcp::tokio::Transport,
    allowed: Arc<Vec<String>>,
}

impl OriginCheck {
    pub fn new(inner: tcp::tokio::Transport, allowed: &[String]) -> Self {
        Self { inner, allowed: Arc::new(normalize(allowed)) }
    }
}

impl Transport for OriginCheck {
    type Output = tcp::tokio::TcpStream;
    type Error = io::Error;
    type ListenerUpgrade = BoxFuture<'static, io::Result<Self::Output>>;
    type Dial = <tcp::tokio::Transport as Transport>::Dial;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<io::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Self::Dial, TransportError<io::Error>> {
        self.inner.dial(addr, opts)
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
        let allowed = self.allowed.clone();
        Pin::new(&mut self.inner).poll(cx).map(|event| {
            event.map_upgrade(move |upgrade| {
                async move {
                    let stream = upgrade.await?;
                    admit(stream, allowed).await
                }
                .boxed()
            })
        })
    }
}

/// The WebSocket transport of the swarm: libp2p's, over the Origin-checked TCP transport, with
/// noise and yamux (what `SwarmBuilder::with_websocket` builds, with its TCP underneath swapped).
pub fn websocket_transport(
    key: &libp2p::identity::Keypair,
    allowed: &[String],
) -> Result<
    impl Transport<
            Output = (
                libp2p::PeerId,
                libp2p::yamux::Muxer<impl futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static>,
            ),
            Error = impl std::error::Error + Send + Sync + 'static,
            Dial = impl Send,
            ListenerUpgrade = impl Send,
        > + Send
        + Unpin
        + 'static,
    Box<dyn std::error::Error + Send + Sync>,
> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    Ok(libp2p::websocket::Config::new(OriginCheck::new(tcp, allowed))
        .upgrade(libp2p::core::upgrade::Version::V1Lazy)
        .authenticate(libp2p::noise::Config::new(key)?)
        .multiplex(libp2p::yamux::Config::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(origin: Option<&str>) -> Vec<u8> {
        let mut h = "GET / HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nUpgrade: websocket\r\nConnection: Upgrade".to_string();
        if let Some(o) = origin {
            h += &format!("\r\nOrigin: {o}");
        }
        h.into_bytes()
    }

    #[test]
    fn only_allowed_origins_or_none_pass() {
        let allowed = normalize(&["http://127.0.0.1:8000/".into(), "HTTP://localhost:8000".into()]);
        assert!(check_head(&head(None), &allowed).is_ok());
        assert!(check_head(&head(Some("http://127.0.0.1:8000")), &allowed).is_ok());
        assert!(check_head(&head(Some("http://LOCALHOST:8000/")), &allowed).is_ok());
        for bad in ["https://evil.example", "null", "http://127.0.0.1:8001", "http://127.0.0.1:8000.evil.example"] {
            assert_eq!(check_head(&head(Some(bad)), &allowed), Err(bad.to_string()));
        }
        // A second Origin header cannot smuggle a bad one past a good one.
        let mut two = head(Some("http://127.0.0.1:8000"));
        two.extend_from_slice(b"\r\norigin: https://evil.example");
        assert!(check_head(&two, &allowed).is_err());
        assert!(check_head(&head(Some("null")), &normalize(&["null".into()])).is_ok());
    }
}
